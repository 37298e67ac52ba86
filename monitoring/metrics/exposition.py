"""The figures /metrics exposes, as prometheus_client collectors on a registry of their own (the
library's global one would add this process's Python and GC figures to cluster-wide ones).

Counters are cluster-wide and cumulative (monitoring.metrics.totals); gauges are read at scrape
time: the switch, this process's breaker, the cache Redis and the open alerts."""

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from monitoring.cache import gate
from monitoring.metrics import totals
from monitoring.metrics.recorder import LATENCY_BUCKETS_MS
from monitoring.models import Alert

CACHE_OUTCOMES = ("hits", "misses", "errors", "bypassed")
LE = [f"{bound / 1000:g}" for bound in LATENCY_BUCKETS_MS] + ["+Inf"]


def request_families(groups: dict) -> list:
    served = CounterMetricFamily(
        "opsdash_requests_total",
        "Requests served, by route group and status class.",
        labels=["group", "status"],
    )
    duration = HistogramMetricFamily(
        "opsdash_request_duration_seconds", "Request latency by route group.", labels=["group"]
    )
    for group, figures in sorted(groups.items()):
        for status, n in sorted(figures["status"].items()):
            served.add_metric([group, status], n)
        cumulative, buckets = 0, []
        for le, n in zip(LE, figures["buckets"], strict=True):
            cumulative += n
            buckets.append((le, cumulative))
        duration.add_metric([group], buckets, figures["latency_us"] / 1_000_000)
    return [served, duration]


def cache_families(namespaces: dict) -> list:
    operations = CounterMetricFamily(
        "opsdash_cache_operations_total",
        "Cache lookups by namespace and outcome.",
        labels=["namespace", "outcome"],
    )
    calls = CounterMetricFamily(
        "opsdash_cache_redis_calls_total",
        "Redis round trips made by the cache gate, by namespace.",
        labels=["namespace"],
    )
    seconds = CounterMetricFamily(
        "opsdash_cache_redis_seconds_total",
        "Time spent in those Redis round trips, by namespace.",
        labels=["namespace"],
    )
    for ns, figures in sorted(namespaces.items()):
        for outcome in CACHE_OUTCOMES:
            operations.add_metric([ns, outcome], figures[outcome])
        calls.add_metric([ns], figures["redis_calls"])
        seconds.add_metric([ns], figures["redis_us"] / 1_000_000)
    return [operations, calls, seconds]


class CountersCollector(Collector):
    """Requests and cache operations over every process, since the first window."""

    def collect(self):
        figures = totals.cumulative()
        yield from request_families(figures["requests"])
        yield from cache_families(figures["cache"])


def _gauge(name: str, text: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def redis_families(sample: dict) -> list:
    families = [
        _gauge(
            "opsdash_redis_up",
            "1 when the cache Redis answers PING.",
            int(bool(sample.get("connected"))),
        )
    ]
    if not sample.get("connected"):
        return families
    families.append(
        _gauge(
            "opsdash_redis_ping_seconds",
            "PING round trip to the cache Redis.",
            sample["latency_ms"] / 1000,
        )
    )
    memory = GaugeMetricFamily(
        "opsdash_redis_memory_bytes", "Redis memory in use and its limit.", labels=["kind"]
    )
    memory.add_metric(["used"], sample["used_memory_bytes"])
    memory.add_metric(["max"], sample["max_memory_bytes"])
    return [*families, memory]


def alert_family() -> GaugeMetricFamily:
    active = GaugeMetricFamily(
        "opsdash_alerts_active", "Open alerts by severity and state.", labels=["severity", "state"]
    )
    for severity in Alert.Severity.values:
        for state in (Alert.State.PENDING, Alert.State.FIRING):
            n = Alert.objects.filter(severity=severity, state=state).count()
            active.add_metric([severity, state], n)
    return active


class StateCollector(Collector):
    """The switch, this process's breaker, the cache Redis and the open alerts, as of now."""

    def collect(self):
        state = gate.switch.current()
        breaker = gate.breaker.state
        yield _gauge(
            "opsdash_cache_enabled",
            "1 when caching is on.",
            int(state.enabled),
            source=state.source,
        )
        yield _gauge("opsdash_cache_generation", "The cache key generation.", state.generation)
        yield _gauge(
            "opsdash_breaker_open",
            "1 while this process's Redis circuit breaker is not closed.",
            int(breaker != "closed"),
            state=breaker,
        )
        yield from redis_families(gate.sample_server())
        yield alert_family()


registry = CollectorRegistry(auto_describe=False)
registry.register(CountersCollector())
registry.register(StateCollector())
