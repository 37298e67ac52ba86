"""Cumulative counts since the first window, for /metrics: the baseline (what every deleted
window counted) plus every window still stored. Prometheus reads any decrease of a counter as
a restart, so pruning must move a window's counts into the baseline, never drop them.

Totals are integers (latencies in whole microseconds, each window's figure rounded once): sums
of integers do not depend on their order, so baseline + remaining windows is exactly the sum
the deleted windows were part of before."""

from django.db.models import Value

from monitoring.cache.stats import COUNTS
from monitoring.metrics.recorder import LATENCY_BUCKETS_MS
from monitoring.models import MetricBaseline, MetricWindow

BASELINE = "deleted"
REQUEST_COUNTS = ["count", "errors", "sql"]
# The cache figures that are counts (redis_seconds is kept as redis_us; maxima are no totals).
CACHE_COUNTS = list(COUNTS)


def empty() -> dict:
    return {"requests": {}, "cache": {}, "counters": {}}


def empty_group() -> dict:
    return dict.fromkeys(REQUEST_COUNTS, 0) | {
        "status": {},
        "buckets": [0] * (len(LATENCY_BUCKETS_MS) + 1),
        "latency_us": 0,
    }


def empty_namespace() -> dict:
    return dict.fromkeys(CACHE_COUNTS, 0) | {"redis_us": 0}


def window_totals(data: dict) -> dict:
    """One window's data (MetricWindow.data) as totals."""
    result = empty()
    for name, part in data.get("requests", {}).items():
        group = result["requests"][name] = empty_group()
        for field in REQUEST_COUNTS:
            group[field] = part.get(field, 0)
        group["status"] = dict(part.get("status", {}))
        for i, n in enumerate(part.get("buckets", [])[: len(group["buckets"])]):
            group["buckets"][i] = n
        group["latency_us"] = round(part.get("latency_sum_ms", 0) * 1000)
    for name, part in data.get("cache", {}).items():
        ns = result["cache"][name] = empty_namespace()
        for field in CACHE_COUNTS:
            ns[field] = part.get(field, 0)
        ns["redis_us"] = round(part.get("redis_seconds", 0) * 1_000_000)
    result["counters"] = dict(data.get("counters", {}))
    return result


def _add_counts(total: dict, part: dict) -> None:
    for key, n in part.items():
        total[key] = total.get(key, 0) + n


def add(total: dict, part: dict) -> None:
    """Add totals `part` into `total`."""
    for name, group in part.get("requests", {}).items():
        into = total["requests"].setdefault(name, empty_group())
        for field in (*REQUEST_COUNTS, "latency_us"):
            into[field] += group.get(field, 0)
        _add_counts(into["status"], group.get("status", {}))
        for i, n in enumerate(group.get("buckets", [])[: len(into["buckets"])]):
            into["buckets"][i] += n
    for name, ns in part.get("cache", {}).items():
        into = total["cache"].setdefault(name, empty_namespace())
        for field in (*CACHE_COUNTS, "redis_us"):
            into[field] += ns.get(field, 0)
    _add_counts(total["counters"], part.get("counters", {}))


def lock_baseline() -> MetricBaseline:
    """The baseline row, locked until the caller's transaction ends: whoever deletes windows
    holds it, so two pruning processes never count the same window twice."""
    baseline, _ = MetricBaseline.objects.select_for_update().get_or_create(
        name=BASELINE, defaults={"totals": empty()}
    )
    return baseline


def absorb(baseline: MetricBaseline, deleted: list[dict]) -> None:
    """Add the totals of what is being deleted (in the caller's transaction, which also deletes
    it) to the locked baseline. Anything that deletes counted rows calls this: a prune of raw
    windows today, of rolled-up rows tomorrow."""
    for part in deleted:
        add(baseline.totals, part)
    baseline.save(update_fields=["totals", "updated_at"])


def cumulative() -> dict:
    """Baseline plus every stored window, read in one statement (one snapshot), so a prune
    committing meanwhile is seen either entirely or not at all."""
    windows = MetricWindow.objects.annotate(kind=Value("window")).values_list("kind", "data")
    baseline = (
        MetricBaseline.objects.filter(name=BASELINE)
        .annotate(kind=Value("baseline"))
        .values_list("kind", "totals")
    )
    result = empty()
    for kind, data in windows.union(baseline, all=True):
        add(result, window_totals(data) if kind == "window" else data)
    return result
