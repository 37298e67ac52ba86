"""Monitoring's readiness checks: the Redis infrastructure, the gate's resilience, and the
alerting. (What the cache does for a domain is checked by that domain's `validation` module.)"""

import ipaddress
import socket
import time
from urllib.parse import urlsplit

from django.conf import settings

from monitoring.alerts import delivery, lease
from monitoring.alerts.evaluator import LEASE as EVALUATOR_LEASE
from monitoring.alerts.transports import configured_transports
from monitoring.cache import gate, switch
from monitoring.cache.breaker import OPEN
from monitoring.cache.diagnostics import (
    CheckResult,
    IsolatedGate,
    check_connection,
    describe_memory,
    describe_topology,
)
from monitoring.sentinel_urls import is_sentinel_url, parse_sentinel_url
from monitoring.validation.registry import (
    ValidationContext,
    failed,
    passed,
    register,
    skipped,
    warned,
)

LATENCY_PINGS = 20
# Policies that evict under memory pressure; every key the gate writes has a TTL, so the
# volatile-* ones can evict them all.
EVICTING_POLICIES = {
    "allkeys-lru",
    "allkeys-lfu",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
}


def connection_result(context: ValidationContext) -> CheckResult:
    return context.shared["connection"]


# --- infrastructure -----------------------------------------------------------------------


@register("connection", "infrastructure", weight=3)
def connection(context: ValidationContext):
    result = check_connection(settings.REDIS_URL, pings=LATENCY_PINGS)
    context.shared["connection"] = result
    under_sentinel = _topology_summary(result.topology) if result.topology else ""
    if not result.ok:
        return failed(result.diagnosis + under_sentinel)
    version = result.server.get("version", "version unknown")
    detail = f"{result.url} ({result.transport}): Redis {version}, SET/GET/DEL round trip ok"
    problems = topology_issues(result.topology) if result.topology else []
    if problems:
        return warned(f"{detail}{under_sentinel}: {'; '.join(problems)}")
    return passed(detail + under_sentinel)


def _topology_summary(found: dict) -> str:
    """Under Sentinel: the sentinels that answered and the quorum, the primary, its replicas
    and their lag, clients against maxclients."""
    lines = describe_topology(found)
    return "; " + "; ".join(f"{label.strip()}: {text}" for label, text in lines)


@register("switch", "infrastructure")
def caching_switch(context: ValidationContext):
    state = switch.read_state()
    if state.source == switch.UNCONFIGURED:
        return skipped("no REDIS_URL: there is no switch to read")
    if state.source == switch.ENVIRONMENT:
        return warned(
            "caching is pinned off by REDIS_ENABLED=false: the checks of what the cache does "
            "are skipped"
        )
    if not state.enabled:
        return warned(
            f"caching is switched off (by {state.changed_by or '-'}: {state.reason or '-'}); "
            "`manage.py redis_switch on` turns it on"
        )
    return passed(f"caching on (runtime switch, generation {state.generation})")


def topology_issues(found: dict) -> list[str]:
    issues = []
    if found["quorum"] and found["sentinels_answered"] < max(found["quorum"], 2):
        issues.append("too few sentinels answer to agree on a failover")
    if not any(r["state"] == "online" for r in found["replicas"]):
        issues.append("no replica online: a failover has nothing to promote")
    lagging = [r["address"] for r in found["replicas"] if (r["lag_seconds"] or 0) > 1]
    if lagging:
        issues.append(f"{', '.join(lagging)} more than 1 s behind")
    if found["maxclients"] and found["connected_clients"] > 0.8 * found["maxclients"]:
        issues.append("over 80 % of maxclients connected")
    return issues


@register("tls", "infrastructure", requires=["connection"])
def tls(context: ValidationContext):
    if is_sentinel_url(settings.REDIS_URL):
        hosts = [host for host, _ in parse_sentinel_url(settings.REDIS_URL)["sentinels"]]
        if all(_is_loopback(host) for host in hosts):
            return skipped("sentinels on a loopback address: TLS does not apply")
        return warned("Sentinel over plain TCP: data and password cross the network unencrypted")
    parts = urlsplit(settings.REDIS_URL)
    if parts.scheme == "rediss":
        authority = settings.REDIS_TLS_CA_FILE or "the system's CA bundle"
        return passed(f"TLS; certificate and host name verified against {authority}")
    if parts.scheme == "unix":
        return skipped("a unix socket: local, TLS does not apply")
    if _is_loopback(parts.hostname or ""):
        return skipped("redis:// to a loopback address: the URL does not ask for TLS")
    return warned(
        f"plain redis:// to {parts.hostname}: data and password cross the network unencrypted; "
        "use rediss://"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@register("latency", "infrastructure", requires=["connection"])
def latency(context: ValidationContext):
    result = connection_result(context)
    limit = context.options.max_latency_ms
    detail = (
        f"{result.latency_ms:.2f} ms, median of {result.pings} PINGs (threshold {limit:g} ms; "
        f"the app waits at most {settings.REDIS_SOCKET_TIMEOUT * 1000:g} ms)"
    )
    return passed(detail) if result.latency_ms <= limit else failed(detail)


@register("memory", "infrastructure", requires=["connection"])
def memory(context: ValidationContext):
    server = connection_result(context).server
    if not server:
        return warned(connection_result(context).server_note or "INFO unavailable")
    issues = memory_issues(server)
    summary = describe_memory(server)
    if issues:
        return warned(f"{summary}: {'; '.join(issues)}")
    return passed(summary)


def memory_issues(server: dict) -> list[str]:
    issues = []
    maximum, policy = server["max_memory_bytes"], server["maxmemory_policy"]
    if not maximum:
        issues.append("maxmemory is not set: Redis grows until the host runs out of memory")
    if policy not in EVICTING_POLICIES:
        issues.append(
            f"{policy} does not evict: once full, every store fails; use allkeys-lru, "
            "allkeys-lfu or a volatile-* policy"
        )
    ratio = server.get("memory_ratio")
    if ratio is not None and ratio >= settings.ALERT_REDIS_MEMORY_WARNING:
        issues.append(f"{ratio:.0%} of maxmemory in use")
    return issues


# --- resilience ---------------------------------------------------------------------------


@register("breaker_fallback", "resilience", weight=2)
def breaker_fallback(context: ValidationContext):
    """A private gate on a Redis that refuses connections: every read still answers (from the
    loader), the breaker opens after REDIS_BREAKER_FAILURES faults, and then Redis costs
    nothing. This process's gate and the deployment's switch are not touched."""
    real_breaker = gate.breaker.state
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"redis://127.0.0.1:{placeholder.getsockname()[1]}/0"
        private = IsolatedGate(url)
        try:
            figures = _read_through_an_outage(private)
        finally:
            private.close()
    problems = _fallback_problems(private, figures)
    if gate.breaker.state != real_breaker:
        problems.append(f"this process's breaker moved from {real_breaker}")
    if problems:
        return failed("; ".join(problems))
    return passed(
        f"against an unreachable Redis ({url}) {figures['faults']} reads answered from the "
        f"database, the breaker opened, and the next read skipped Redis "
        f"({figures['open_ms']:.3f} ms)"
    )


def _read_through_an_outage(private: IsolatedGate) -> dict:
    loads = []

    def loader() -> str:
        loads.append(1)
        return "from the database"

    faults = private.breaker.failure_threshold
    answers = [private.get_or_load("validation", "probe", loader) for _ in range(faults)]
    state_after_faults = private.breaker.state
    calls_before = private.stats.snapshot()["validation"]["redis_calls"]
    started = time.perf_counter()
    answers.append(private.get_or_load("validation", "probe", loader))
    open_ms = (time.perf_counter() - started) * 1000
    counters = private.stats.snapshot()["validation"]
    return {
        "faults": faults,
        "answers": answers,
        "loads": len(loads),
        "state": state_after_faults,
        "calls_while_open": counters["redis_calls"] - calls_before,
        "open_ms": open_ms,
    }


def _fallback_problems(private: IsolatedGate, figures: dict) -> list[str]:
    problems = []
    if figures["answers"] != ["from the database"] * (figures["faults"] + 1):
        problems.append(f"reads answered {figures['answers']!r}")
    if figures["state"] != OPEN:
        problems.append(f"the breaker is {figures['state']} after {figures['faults']} faults")
    if figures["calls_while_open"]:
        problems.append(f"{figures['calls_while_open']} Redis calls with the breaker open")
    return problems


# --- monitoring ---------------------------------------------------------------------------


@register("evaluator", "monitoring")
def evaluator(context: ValidationContext):
    if not settings.REDIS_MONITORING_ENABLED:
        return warned("REDIS_MONITORING_ENABLED=false: no evaluator runs, so no alert can fire")
    held = lease.current(EVALUATOR_LEASE)
    if held is None and not settings.MONITORING_IN_APP:
        return failed(
            "no evaluator holds the lease: MONITORING_IN_APP=false leaves monitoring to "
            "`manage.py monitor`, and none runs on this database, so no alert would fire"
        )
    if held is None:
        return failed(
            "no evaluator holds the lease: no app process (or `manage.py monitor`) runs on this "
            "database, so no alert would fire (run this check against the running deployment)"
        )
    until = held.expires_at.strftime("%H:%M:%S %Z")
    return passed(f"alive: {held.holder} holds the lease (until {until})")


@register("notifications", "monitoring")
def notifications(context: ValidationContext):
    names = [transport.name for transport in configured_transports()]
    if not names:
        return warned(
            "no notification channel (REDIS_ALERT_WEBHOOK_URL, ALERT_EMAILS, "
            "PAGERDUTY_ROUTING_KEY): alerts show on the dashboard only"
        )
    failing = [c for c in delivery.channel_health() if c["failing"]]
    if failing:
        return failed(
            "; ".join(f"{c['channel']}: last message given up ({c['last_error']})" for c in failing)
        )
    return passed(f"alerts notify: {', '.join(names)}")
