"""Figures over time, for the dashboard's charts: the deployment's windows grouped into equal
buckets (one point per `step_seconds`), each bucket summarized like `aggregate` summarizes a
period, trimmed to what a chart draws."""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from monitoring.metrics.aggregate import (
    cache_figures,
    empty_cache,
    merge_cache,
    merge_group,
    request_figures,
)
from monitoring.metrics.recorder import empty_group
from monitoring.metrics.store import windows_since
from monitoring.models import MetricWindow

MAX_POINTS = 720


class Bucket:
    """The windows that ended within one step, merged across processes."""

    def __init__(self, ended_at: datetime) -> None:
        self.ended_at = ended_at
        self.overall = empty_group()
        self.traffic = empty_group()
        self.groups: dict[str, dict] = {}
        self.cache = empty_cache()
        self.server: dict | None = None

    def add(self, window: MetricWindow) -> None:
        self.add_data(window.data)

    def add_data(self, data: dict) -> None:
        """A window's figures, or a rollup's (the same keys)."""
        for name, part in data.get("requests", {}).items():
            merge_group(self.overall, part)
            if name not in settings.METRICS_NOT_TRAFFIC:
                merge_group(self.traffic, part)
            merge_group(self.groups.setdefault(name, empty_group()), part)
        for part in data.get("cache", {}).values():
            merge_cache(self.cache, part)
        server = data.get("server")
        if server and (self.server is None or server.get("at", 0) >= self.server.get("at", 0)):
            self.server = server

    def point(self, seconds: int) -> dict:
        overall = request_figures(self.overall, seconds)
        traffic = request_figures(self.traffic, seconds)
        cache = cache_figures(self.cache)
        server = self.server if self.server and self.server.get("connected") else {}
        return {
            "t": self.ended_at.isoformat(),
            "requests": overall["requests"],
            "requests_per_second": overall["requests_per_second"],
            # What the error-rate rule judges: the monitoring's own probes (a health check's
            # deliberate 503 during an outage) are not traffic.
            "error_rate": traffic["error_rate"],
            "p50_ms": overall["p50_ms"],
            "p95_ms": overall["p95_ms"],
            "hit_rate": cache["hit_rate"],
            "lookups": cache["lookups"],
            "redis_avg_ms": cache["redis_avg_ms"],
            "redis_ping_ms": server.get("latency_ms"),
            "redis_memory_bytes": server.get("used_memory_bytes"),
            "redis_max_memory_bytes": server.get("max_memory_bytes"),
            "route_groups": {
                name: _group_point(group, seconds) for name, group in sorted(self.groups.items())
            },
        }


def _group_point(group: dict, seconds: int) -> dict:
    figures = request_figures(group, seconds)
    return {key: figures[key] for key in ("requests_per_second", "p50_ms", "p95_ms", "error_rate")}


def bucket_ends(minutes: int, step_seconds: int, now: datetime) -> list[datetime]:
    """The ends of the complete buckets of the last `minutes`, aligned to multiples of the step
    (so two fetches a few seconds apart agree on every bucket they share), oldest first. The
    bucket still filling is left out: the live snapshots draw the present."""
    now_seconds = int(now.timestamp())
    last_end = now_seconds - now_seconds % step_seconds
    count = min(minutes * 60 // step_seconds, MAX_POINTS)
    return [
        datetime.fromtimestamp(last_end - step_seconds * i, tz=UTC)
        for i in range(count - 1, -1, -1)
    ]


def series(minutes: int = 15, step_seconds: int = 15, now: datetime | None = None) -> dict:
    """One point per `step_seconds` over the last `minutes`, every process merged."""
    now = now or timezone.now()
    ends = bucket_ends(minutes, step_seconds, now)
    buckets = [Bucket(end) for end in ends]
    if buckets:
        first_start = ends[0] - timedelta(seconds=step_seconds)
        for window in windows_since(first_start):
            index = _bucket_index(window.ended_at, first_start, step_seconds)
            if 0 <= index < len(buckets):
                buckets[index].add(window)
    return {
        "minutes": minutes,
        "step_seconds": step_seconds,
        "points": [bucket.point(step_seconds) for bucket in buckets],
    }


def _bucket_index(ended_at: datetime, first_start: datetime, step_seconds: int) -> int:
    """Bucket i holds the windows that ended in (start + i*step, start + (i+1)*step]."""
    elapsed = (ended_at - first_start).total_seconds()
    return int(-(-elapsed // step_seconds)) - 1
