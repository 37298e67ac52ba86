"""Windows in the database: written every few seconds by each process, pruned after the
retention, and merged across every process for any period."""

import logging
import threading
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from monitoring import counters
from monitoring.cache import gate
from monitoring.identity import PROCESS_ID
from monitoring.metrics import totals
from monitoring.metrics.recorder import recorder
from monitoring.models import MetricWindow

log = logging.getLogger(__name__)
_server_lock = threading.Lock()
_server_sample: dict | None = None


def note_server_sample(sample: dict) -> None:
    """Keep the evaluator's latest sample of the Redis server (PING latency, memory) for the
    next window, so the charts have the server's history too."""
    global _server_sample
    with _server_lock:
        _server_sample = sample


def _take_server_sample() -> dict | None:
    global _server_sample
    with _server_lock:
        sample, _server_sample = _server_sample, None
    return sample


def flush() -> MetricWindow | None:
    """Write what this process recorded since the last flush as one window row."""
    started, ended, requests = recorder.take()
    cache = gate.stats.take()
    events = counters.take()
    breaker = gate.stats.take_breaker_changes()
    server = _take_server_sample()
    if not (requests or cache or events or breaker or server):
        return None
    data = {
        "requests": requests,
        "cache": cache,
        "counters": events,
        "breaker": {"changes": breaker, "state": gate.breaker.state},
    }
    if server:
        data["server"] = server
    return MetricWindow.objects.create(
        process=PROCESS_ID,
        started_at=datetime.fromtimestamp(started, tz=UTC),
        ended_at=datetime.fromtimestamp(ended, tz=UTC),
        data=data,
    )


def prune() -> int:
    """Delete the windows older than the retention, their counts moved into the baseline in the
    same transaction (the /metrics counters must not go down)."""
    cutoff = timezone.now() - timedelta(hours=settings.METRICS_RETENTION_HOURS)
    with transaction.atomic():
        baseline = totals.lock_baseline()
        expired = list(MetricWindow.objects.filter(ended_at__lt=cutoff).values_list("pk", "data"))
        if not expired:
            return 0
        totals.absorb(baseline, [totals.window_totals(data) for _, data in expired])
        # By key, not by age: a window written meanwhile by a process whose clock is behind
        # was not counted into the baseline and must stay.
        MetricWindow.objects.filter(pk__in=[pk for pk, _ in expired]).delete()
    return len(expired)


def windows_since(since: datetime) -> list[MetricWindow]:
    return list(MetricWindow.objects.filter(ended_at__gt=since).order_by("ended_at"))
