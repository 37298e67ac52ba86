"""Health of the deployment's parts, as application/health+json-style documents:
{"status": "pass" | "warn" | "fail", "checks": {component: {"status", "observed", ...}}}."""

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from monitoring import events
from monitoring.alerts import delivery, lease
from monitoring.alerts.evaluator import LEASE
from monitoring.cache import gate, switch
from monitoring.redaction import masked_url

ORDER = {"pass": 0, "warn": 1, "fail": 2}

log = logging.getLogger(__name__)


def worst(statuses) -> str:
    return max(statuses, key=ORDER.__getitem__, default="pass")


def check_database() -> dict:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        log.warning("health: database check failed: %s: %s", type(exc).__name__, exc)
        return {"status": "fail", "error": public_error(f"{type(exc).__name__}: {exc}")}
    vendor = connection.vendor
    return {"status": "pass", "observed": {"vendor": vendor, "latency_ms": _ms(started)}}


def switch_state() -> switch.SwitchState | None:
    try:
        return gate.switch.current()
    except DatabaseError:
        return None


def public_error(error: str | None) -> str | None:
    """An error as these public answers show it: its kind only. The message itself (host
    names, ports, user names) stays in the app's log and the authenticated APIs."""
    if not error:
        return error
    return f"{error.split(':', 1)[0]} (details in the app's log)"


def _public_sample(sample: dict) -> dict:
    return {**sample, "error": public_error(sample["error"])} if "error" in sample else sample


def check_redis(state: switch.SwitchState | None) -> dict:
    sample = _public_sample(gate.sample_server())
    if not sample.get("configured"):
        return {"status": "pass", "observed": {"configured": False}}
    enabled = bool(state and state.enabled)
    # Redis down while caching is on is a warning for the deployment (every answer still comes
    # from the database) but an incident for the people watching: dashboards show it red.
    if sample["connected"] or not enabled:
        return {"status": "pass", "observed": {**sample, "caching_enabled": enabled}}
    return {"status": "warn", "incident": True, "observed": {**sample, "caching_enabled": enabled}}


def check_switch(state: switch.SwitchState | None) -> dict:
    if state is None:
        return {"status": "warn", "error": "switch state unknown (database unreachable)"}
    return {"status": "pass", "observed": state.as_dict()}


def check_breaker() -> dict:
    state = gate.breaker.state
    observed = {"state": state, "seconds_until_probe": round(gate.breaker.seconds_until_probe(), 3)}
    return {"status": "pass" if state == "closed" else "warn", "observed": observed}


def check_evaluator() -> dict:
    if not settings.REDIS_MONITORING_ENABLED:
        return {"status": "pass", "observed": {"enabled": False}}
    try:
        held = lease.current(LEASE)
    except DatabaseError:
        return {"status": "warn", "error": "unknown (database unreachable)"}
    if held is None:
        return {
            "status": "warn",
            "error": "no evaluator holds the lease",
            "observed": {"enabled": True},
        }
    observed = {
        "enabled": True,
        "holder": held.holder,
        "lease_expires_at": held.expires_at.isoformat(),
    }
    return {"status": "pass", "observed": observed}


# A row due this long without an attempt means no notification worker is running.
OVERDUE_SECONDS = 60


def check_notifications() -> dict:
    """Whether alerts reach people: a channel whose last message was given up on, or messages
    left waiting, are an incident for the people watching (nobody would be paged)."""
    try:
        channels = delivery.channel_health()
        overdue = delivery.overdue(OVERDUE_SECONDS)
    except DatabaseError:
        return {"status": "warn", "error": "unknown (database unreachable)"}
    observed = {
        "channels": [
            {**c, "last_at": c["last_at"].isoformat() if c["last_at"] else None} for c in channels
        ],
        "overdue": overdue,
    }
    if overdue or any(c["failing"] for c in channels):
        return {"status": "warn", "incident": True, "observed": observed}
    return {"status": "pass", "observed": observed}


def full_health() -> dict:
    state = switch_state()
    layer = events.layer_health()
    checks = {
        "database": check_database(),
        "redis": check_redis(state),
        "switch": check_switch(state),
        "breaker": check_breaker(),
        "channel_layer": {"status": layer.pop("status"), "observed": layer},
        "evaluator": check_evaluator(),
        "notifications": check_notifications(),
    }
    return document(checks)


def readiness() -> dict:
    state = switch_state()
    return document({"database": check_database(), "redis": check_redis(state)})


def document(checks: dict) -> dict:
    now = timezone.now().isoformat()
    for check in checks.values():
        check.setdefault("time", now)
    return {"status": worst(c["status"] for c in checks.values()), "time": now, "checks": checks}


def redis_health() -> tuple[dict, int]:
    """The runbook's /health/redis document, and its HTTP status."""
    state = switch_state()
    sample = gate.sample_server()
    enabled = bool(state and state.enabled)
    if not sample.get("configured"):
        status = "disabled"
    elif not enabled:
        status = "disabled"
    elif sample["connected"]:
        status = "healthy" if gate.breaker.state == "closed" else "degraded"
    else:
        status = "unhealthy"
    body = {
        "status": status,
        "redis": {
            "enabled": enabled,
            "source": state.source if state else "unknown",
            "url": masked_url(settings.REDIS_URL) if settings.REDIS_URL else None,
            "embedded": settings.REDIS_EMBEDDED,
            "connected": sample.get("connected", False),
            "breaker": gate.breaker.state,
            "generation": state.generation if state else None,
            "connectionTest": {
                "connected": sample.get("connected", False),
                "status": "healthy" if sample.get("connected") else "unreachable",
                "latency_ms": sample.get("latency_ms"),
                "error": public_error(sample.get("error")),
            },
            "memory": {
                "used_bytes": sample.get("used_memory_bytes"),
                "max_bytes": sample.get("max_memory_bytes"),
                "used_ratio": sample.get("memory_ratio"),
                "policy": sample.get("maxmemory_policy"),
                "evicted_keys": sample.get("evicted_keys"),
            },
            "server": {
                "version": sample.get("version"),
                "connected_clients": sample.get("connected_clients"),
                "ops_per_second": sample.get("ops_per_second"),
                # Under Sentinel, the primary it must be (a "slave" here is a demoted one).
                "role": sample.get("role"),
                "sentinel": bool(
                    settings.CACHES.get("redis", {}).get("OPTIONS", {}).get("SENTINELS")
                ),
            },
        },
    }
    return body, 503 if status == "unhealthy" else 200


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
