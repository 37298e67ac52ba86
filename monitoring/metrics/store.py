"""Windows in the database: written every few seconds by each process, pruned after the
retention, and merged across every process for any period."""

import logging
import threading
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from monitoring import counters
from monitoring.cache import gate
from monitoring.identity import PROCESS_ID
from monitoring.metrics import totals
from monitoring.metrics.recorder import recorder
from monitoring.models import MetricWindow

log = logging.getLogger(__name__)
ROLLUP_SECONDS = 30
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


def roll_up() -> None:
    # Imported here: the rollups merge as the aggregates do, and the aggregates read this module.
    from monitoring.metrics import rollups

    try:
        rollups.roll_up()
    except DatabaseError:
        raise
    except Exception:  # a bug in the history must not stop this process's windows
        log.exception("metrics: rollup failed")


def prune_rollups() -> None:
    from monitoring.metrics import rollups

    rollups.prune_rollups()


def _rounds_per(seconds: float) -> int:
    return max(1, int(seconds // settings.METRICS_FLUSH_SECONDS))


class Flusher(threading.Thread):
    """Writes this process's window every METRICS_FLUSH_SECONDS; rolls the history up about
    twice a minute (any process may: the rollups take turns on a lock); prunes now and then."""

    def __init__(self) -> None:
        super().__init__(name="opsdash-metrics-flusher", daemon=True)
        self._stopping = threading.Event()

    def run(self) -> None:
        rounds = 0
        while not self._stopping.wait(settings.METRICS_FLUSH_SECONDS):
            rounds += 1
            try:
                flush()
                if rounds % _rounds_per(ROLLUP_SECONDS) == 0:
                    roll_up()
                if rounds % 60 == 0:
                    prune()
                    prune_rollups()
            except DatabaseError:
                log.warning("metrics: database unreachable, window dropped")
            finally:
                close_old_connections()

    def stop(self) -> None:
        self._stopping.set()
