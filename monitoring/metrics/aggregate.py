"""Figures for a period, from every process's windows: rates, latency percentiles, hit rates."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from monitoring.cache.stats import COUNTS
from monitoring.metrics.recorder import LATENCY_BUCKETS_MS, empty_group
from monitoring.metrics.store import windows_since

CACHE_FIELDS = [*COUNTS, "redis_seconds"]
# Up to an hour from the raw windows; longer from the rollups (monitoring.metrics.history).
WINDOWS = {
    "60s": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "24h": 86400,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
}


def empty_cache() -> dict:
    return dict.fromkeys(CACHE_FIELDS, 0) | {"redis_max_seconds": 0}


def merge_cache(total: dict, part: dict) -> None:
    for field in CACHE_FIELDS:
        total[field] += part.get(field, 0)
    total["redis_max_seconds"] = max(total["redis_max_seconds"], part.get("redis_max_seconds", 0))


def merge_group(total: dict, part: dict) -> None:
    for field in ("count", "errors", "latency_sum_ms", "sql"):
        total[field] += part.get(field, 0)
    total["latency_max_ms"] = max(total["latency_max_ms"], part.get("latency_max_ms", 0))
    for status, n in part.get("status", {}).items():
        total["status"][status] = total["status"].get(status, 0) + n
    for i, n in enumerate(part.get("buckets", [])[: len(total["buckets"])]):
        total["buckets"][i] += n


def percentile(buckets: list[int], fraction: float) -> float | None:
    """The latency (ms) below which `fraction` of requests fell, interpolated in its bucket."""
    count = sum(buckets)
    if not count:
        return None
    rank = fraction * count
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            low = LATENCY_BUCKETS_MS[i - 1] if i else 0.0
            high = LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else low * 2
            return round(low + (high - low) * (rank - seen) / n, 2)
        seen += n
    return None


def _at_most(value: float | None, ceiling: float) -> float | None:
    """A percentile interpolated in its bucket never exceeds the slowest request seen."""
    return None if value is None else round(min(value, ceiling), 2)


def request_figures(group: dict, seconds: float) -> dict:
    count = group["count"]
    return {
        "requests": count,
        "requests_per_second": round(count / seconds, 3) if seconds else 0.0,
        "errors": group["errors"],
        "error_rate": round(group["errors"] / count, 4) if count else None,
        "status": group["status"],
        "avg_ms": round(group["latency_sum_ms"] / count, 2) if count else None,
        "p50_ms": _at_most(percentile(group["buckets"], 0.50), group["latency_max_ms"]),
        "p95_ms": _at_most(percentile(group["buckets"], 0.95), group["latency_max_ms"]),
        "p99_ms": _at_most(percentile(group["buckets"], 0.99), group["latency_max_ms"]),
        "max_ms": round(group["latency_max_ms"], 2),
        "sql_per_request": round(group["sql"] / count, 3) if count else None,
        "histogram": {"bounds_ms": LATENCY_BUCKETS_MS, "counts": group["buckets"]},
    }


def cache_figures(ns: dict) -> dict:
    lookups = ns["hits"] + ns["misses"]
    calls = ns["redis_calls"]
    return {
        **{field: ns[field] for field in CACHE_FIELDS if field != "redis_seconds"},
        "lookups": lookups,
        "hit_rate": round(ns["hits"] / lookups, 4) if lookups else None,
        "redis_avg_ms": round(ns["redis_seconds"] * 1000 / calls, 3) if calls else None,
        "redis_max_ms": round(ns.get("redis_max_seconds", 0) * 1000, 3),
    }


def aggregate(seconds: int) -> dict:
    """Every process's figures over the last `seconds`, merged."""
    now = timezone.now()
    windows = windows_since(now - timedelta(seconds=seconds))
    groups: dict[str, dict] = {}
    caches: dict[str, dict] = {}
    counters: dict[str, int] = {}
    processes = set()
    for window in windows:
        processes.add(window.process)
        for name, part in window.data.get("requests", {}).items():
            merge_group(groups.setdefault(name, empty_group()), part)
        for name, part in window.data.get("cache", {}).items():
            merge_cache(caches.setdefault(name, empty_cache()), part)
        for name, n in window.data.get("counters", {}).items():
            counters[name] = counters.get(name, 0) + n
    return summarize(groups, caches, counters, seconds, sorted(processes))


def summarize(groups, caches, counters, seconds, processes) -> dict:
    overall = empty_group()
    for group in groups.values():
        merge_group(overall, group)
    cache_total = empty_cache()
    for ns in caches.values():
        merge_cache(cache_total, ns)
    traffic = empty_group()
    for name, group in groups.items():
        if name not in settings.METRICS_NOT_TRAFFIC:
            merge_group(traffic, group)
    return {
        "window_seconds": seconds,
        "processes": processes,
        "overall": request_figures(overall, seconds),
        # What the alert rules judge: requests served to customers and providers, not the
        # monitoring's own probes (a health check's 503 during an outage is not an error rate).
        "traffic": request_figures(traffic, seconds),
        "route_groups": {name: request_figures(g, seconds) for name, g in sorted(groups.items())},
        "cache": cache_figures(cache_total),
        "cache_namespaces": {name: cache_figures(ns) for name, ns in sorted(caches.items())},
        "counters": counters,
    }
