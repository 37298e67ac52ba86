"""Shared by the rollup and review tests: windows written by hand, with exactly known figures,
as a served process's flusher writes them."""

import bisect
from datetime import UTC, datetime, timedelta

from monitoring.metrics.recorder import LATENCY_BUCKETS_MS, empty_group
from monitoring.models import MetricWindow

# A whole hour three days ago: the tests' windows are written around it.
_hour = int(datetime.now(UTC).timestamp()) // 3600 * 3600
T0 = datetime.fromtimestamp(_hour, tz=UTC) - timedelta(days=3)


def at(minutes: float = 0, hours: float = 0, days: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, hours=hours, days=days)


def requests(*statuses_and_ms: tuple[int, float]) -> dict:
    """A route group's figures for requests answered (status, latency in ms), as recorded."""
    group = empty_group()
    for status, ms in statuses_and_ms:
        group["count"] += 1
        group["errors"] += status >= 500
        status_class = f"{status // 100}xx"
        group["status"][status_class] = group["status"].get(status_class, 0) + 1
        group["latency_sum_ms"] += ms
        group["latency_max_ms"] = max(group["latency_max_ms"], ms)
        group["buckets"][bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
    return group


def lookups(hits: int, misses: int) -> dict:
    return {"hits": hits, "misses": misses}


def redis_sample(
    when: datetime, connected: bool = True, used: int = 0, max_memory: int = 0, checked=True
) -> dict:
    return {
        "at": when.timestamp(),
        "checked": checked,
        "connected": connected,
        "latency_ms": 0.5 if connected else None,
        "used_memory_bytes": used if connected else None,
        "max_memory_bytes": max_memory if connected else None,
    }


def window(process: str, ended_at: datetime, seconds: float = 5, **data) -> MetricWindow:
    """One window of `process` ending at `ended_at`; data: requests={group: ...},
    cache={namespace: ...}, counters={...}, server=redis_sample(...)."""
    body = {
        "requests": data.get("requests", {}),
        "cache": data.get("cache", {}),
        "counters": data.get("counters", {}),
        "breaker": {"changes": [], "state": "closed"},
    }
    if "server" in data:
        body["server"] = data["server"]
    return MetricWindow.objects.create(
        process=process,
        started_at=ended_at - timedelta(seconds=seconds),
        ended_at=ended_at,
        data=body,
    )
