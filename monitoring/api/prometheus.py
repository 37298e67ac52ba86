"""GET /metrics: the deployment's figures in Prometheus' text format. Request and cache counts
are totals over the metrics retention, summed across every process (they drop when old windows
are pruned, which Prometheus treats as a counter reset)."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from monitoring.api.access import monitoring_access
from monitoring.cache import gate
from monitoring.metrics.aggregate import aggregate
from monitoring.metrics.recorder import LATENCY_BUCKETS_MS
from monitoring.models import Alert

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _line(name: str, labels: dict, value) -> str:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{label_text}}} {value}" if labels else f"{name} {value}"


def _header(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def request_lines(groups: dict) -> list[str]:
    lines = _header(
        "opsdash_requests_total", "counter", "Requests served, by route group and status class."
    )
    for group, figures in groups.items():
        for status, n in sorted(figures["status"].items()):
            lines.append(_line("opsdash_requests_total", {"group": group, "status": status}, n))
    lines += _header(
        "opsdash_request_duration_seconds", "histogram", "Request latency by route group."
    )
    for group, figures in groups.items():
        cumulative = 0
        counts = figures["histogram"]["counts"]
        for bound, n in zip(LATENCY_BUCKETS_MS + ["+Inf"], counts, strict=False):
            cumulative += n
            le = "+Inf" if bound == "+Inf" else f"{bound / 1000:g}"
            lines.append(
                _line(
                    "opsdash_request_duration_seconds_bucket",
                    {"group": group, "le": le},
                    cumulative,
                )
            )
        lines.append(
            _line("opsdash_request_duration_seconds_count", {"group": group}, figures["requests"])
        )
        total_seconds = (figures["avg_ms"] or 0) * figures["requests"] / 1000
        lines.append(
            _line("opsdash_request_duration_seconds_sum", {"group": group}, round(total_seconds, 6))
        )
    return lines


def cache_lines(namespaces: dict) -> list[str]:
    lines = _header(
        "opsdash_cache_operations_total", "counter", "Cache lookups by namespace and outcome."
    )
    for ns, figures in namespaces.items():
        for outcome in ("hits", "misses", "errors", "bypassed"):
            lines.append(
                _line(
                    "opsdash_cache_operations_total",
                    {"namespace": ns, "outcome": outcome},
                    figures[outcome],
                )
            )
    return lines


def state_lines() -> list[str]:
    state = gate.switch.current()
    sample = gate.sample_server()
    breaker = gate.breaker.state
    lines = _header("opsdash_cache_enabled", "gauge", "1 when caching is on.")
    lines.append(_line("opsdash_cache_enabled", {"source": state.source}, int(state.enabled)))
    lines += _header("opsdash_cache_generation", "gauge", "The cache key generation.")
    lines.append(_line("opsdash_cache_generation", {}, state.generation))
    lines += _header(
        "opsdash_breaker_open",
        "gauge",
        "1 while this process's Redis circuit breaker is not closed.",
    )
    lines.append(_line("opsdash_breaker_open", {"state": breaker}, int(breaker != "closed")))
    lines += _header("opsdash_redis_up", "gauge", "1 when the cache Redis answers PING.")
    lines.append(_line("opsdash_redis_up", {}, int(bool(sample.get("connected")))))
    if sample.get("connected"):
        lines += _header(
            "opsdash_redis_ping_seconds", "gauge", "PING round trip to the cache Redis."
        )
        lines.append(_line("opsdash_redis_ping_seconds", {}, sample["latency_ms"] / 1000))
        lines += _header(
            "opsdash_redis_memory_bytes", "gauge", "Redis memory in use and its limit."
        )
        lines.append(
            _line("opsdash_redis_memory_bytes", {"kind": "used"}, sample["used_memory_bytes"])
        )
        lines.append(
            _line("opsdash_redis_memory_bytes", {"kind": "max"}, sample["max_memory_bytes"])
        )
    return lines


def alert_lines() -> list[str]:
    lines = _header("opsdash_alerts_active", "gauge", "Open alerts by severity and state.")
    for severity in Alert.Severity.values:
        for state in (Alert.State.PENDING, Alert.State.FIRING):
            n = Alert.objects.filter(severity=severity, state=state).count()
            lines.append(_line("opsdash_alerts_active", {"severity": severity, "state": state}, n))
    return lines


@require_GET
@monitoring_access
def metrics(request: HttpRequest) -> HttpResponse:
    figures = aggregate(settings.METRICS_RETENTION_HOURS * 3600)
    lines = (
        request_lines(figures["route_groups"])
        + cache_lines(figures["cache_namespaces"])
        + state_lines()
        + alert_lines()
    )
    return HttpResponse("\n".join(lines) + "\n", content_type=CONTENT_TYPE)
