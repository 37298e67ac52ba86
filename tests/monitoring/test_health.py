"""The health endpoints in every state the runbook names: all well, caching switched off or
pinned off, no Redis configured, Redis stopped, the breaker open, the database unreachable and
no evaluator running (no password in their answers: test_health_secrets.py)."""

import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections
from django.test import Client, override_settings

from monitoring.alerts import lease
from monitoring.alerts.evaluator import LEASE
from monitoring.cache import gate, switch
from tests.conftest import turn_caching
from tests.monitoring.metrics_support import reset_metrics
from tests.redis_servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

HEALTH_JSON = "application/health+json"
COMPONENTS = {
    "database",
    "redis",
    "switch",
    "breaker",
    "channel_layer",
    "evaluator",
    "notifications",
}


@pytest.fixture(autouse=True)
def fresh_window():
    reset_metrics()
    yield
    reset_metrics()


@pytest.fixture
def evaluator_running():
    """An evaluator holds the deployment's lease (as `manage.py serve` would)."""
    assert lease.acquire(LEASE, "web-1:4242", 600)
    return "web-1:4242"


def get(path: str, **headers) -> tuple[int, dict]:
    response = Client().get(path, headers=headers)
    return response.status_code, response.json()


def statuses(body: dict) -> dict[str, str]:
    return {name: check["status"] for name, check in body["checks"].items()}


# --- all well -------------------------------------------------------------------------------


def test_it_passes_every_component_when_all_is_well(shared_redis, evaluator_running):
    response = Client().get("/api/monitoring/health")

    assert response.status_code == 200
    assert response["Content-Type"] == HEALTH_JSON
    body = response.json()
    assert body["status"] == "pass"
    assert statuses(body) == dict.fromkeys(COMPONENTS, "pass")
    checks = body["checks"]
    assert checks["database"]["observed"]["vendor"] == connection.vendor
    assert checks["redis"]["observed"]["connected"] is True
    assert checks["redis"]["observed"]["caching_enabled"] is True
    assert checks["switch"]["observed"]["enabled"] is True
    assert checks["breaker"]["observed"]["state"] == "closed"
    assert checks["channel_layer"]["observed"]["backend"] == "InMemoryChannelLayer"
    assert checks["evaluator"]["observed"]["holder"] == evaluator_running
    assert all(check["time"] == body["time"] for check in checks.values())


def test_it_is_ready_when_all_is_well(shared_redis):
    response = Client().get("/api/monitoring/health/ready")

    assert (response.status_code, response["Content-Type"]) == (200, HEALTH_JSON)
    body = response.json()
    assert body["status"] == "pass"
    assert statuses(body) == {"database": "pass", "redis": "pass"}


def test_it_reports_redis_healthy_in_the_runbook_shape(shared_redis):
    status, body = get("/api/monitoring/health/redis")

    assert status == 200
    assert body["status"] == "healthy"
    redis_part = body["redis"]
    assert {k: redis_part[k] for k in ("enabled", "source", "connected", "breaker")} == {
        "enabled": True,
        "source": "runtime",
        "connected": True,
        "breaker": "closed",
    }
    assert redis_part["generation"] == switch.read_state().generation
    assert redis_part["url"] == shared_redis  # no password in it to mask
    test = redis_part["connectionTest"]
    assert (test["connected"], test["status"], test["error"]) == (True, "healthy", None)
    assert isinstance(test["latency_ms"], float) and test["latency_ms"] >= 0
    memory = redis_part["memory"]
    assert isinstance(memory["used_bytes"], int) and memory["used_bytes"] > 0
    assert isinstance(memory["max_bytes"], int)
    assert isinstance(memory["policy"], str) and memory["policy"]
    assert isinstance(memory["evicted_keys"], int)


def test_it_is_live_without_asking_anything_external():
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"), database_unreachable():
        response = Client().get("/api/monitoring/health/live")

    assert (response.status_code, response["Content-Type"]) == (200, HEALTH_JSON)
    assert response.json() == {"status": "pass"}


# --- caching off ----------------------------------------------------------------------------


def test_it_reports_redis_disabled_when_the_switch_is_off(shared_redis):
    turn_caching(False)

    status, body = get("/api/monitoring/health/redis")

    assert (status, body["status"]) == (200, "disabled")
    assert (body["redis"]["enabled"], body["redis"]["source"]) == (False, "runtime")
    assert body["redis"]["connected"] is True  # still sampled: it answers, it is just not used
    ready_status, ready = get("/api/monitoring/health/ready")
    assert (ready_status, ready["status"]) == (200, "pass")
    assert ready["checks"]["redis"]["observed"]["caching_enabled"] is False


def test_it_reports_redis_disabled_when_the_environment_pins_it_off(shared_redis):
    with override_settings(REDIS_ENABLED=False):
        status, body = get("/api/monitoring/health/redis")

    assert (status, body["status"]) == (200, "disabled")
    assert (body["redis"]["enabled"], body["redis"]["source"]) == (False, "environment")


def test_it_reports_redis_disabled_when_none_is_configured():
    with override_settings(REDIS_URL=None):
        status, body = get("/api/monitoring/health/redis")
        ready_status, ready = get("/api/monitoring/health/ready")

    assert (status, body["status"]) == (200, "disabled")
    redis_part = body["redis"]
    assert (redis_part["enabled"], redis_part["source"], redis_part["url"]) == (
        False,
        "unconfigured",
        None,
    )
    assert (redis_part["connected"], redis_part["connectionTest"]["status"]) == (
        False,
        "unreachable",
    )
    assert (ready_status, ready["status"]) == (200, "pass")
    assert ready["checks"]["redis"]["observed"] == {"configured": False}


# --- Redis down, breaker open ---------------------------------------------------------------


def test_it_warns_but_stays_ready_while_redis_is_stopped(redis_server, evaluator_running):
    assert switch.read_state().enabled is True
    redis_server.stop()

    ready_status, ready = get("/api/monitoring/health/ready")
    health_status, health = get("/api/monitoring/health")
    live_status, _ = get("/api/monitoring/health/live")

    assert (ready_status, ready["status"]) == (200, "warn")
    assert statuses(ready) == {"database": "pass", "redis": "warn"}
    observed = ready["checks"]["redis"]["observed"]
    assert (observed["connected"], observed["caching_enabled"]) == (False, True)
    assert observed["error"].startswith("ConnectionError")
    assert (health_status, health["status"]) == (200, "warn")
    assert statuses(health) == {**dict.fromkeys(COMPONENTS, "pass"), "redis": "warn"}
    assert live_status == 200


def test_it_reports_redis_unhealthy_with_503_while_it_is_stopped(redis_server):
    redis_server.stop()

    status, body = get("/api/monitoring/health/redis")

    assert (status, body["status"]) == (503, "unhealthy")
    redis_part = body["redis"]
    assert (redis_part["enabled"], redis_part["connected"]) == (True, False)
    test = redis_part["connectionTest"]
    assert (test["connected"], test["status"], test["latency_ms"]) == (False, "unreachable", None)
    assert test["error"].startswith("ConnectionError")
    assert set(redis_part["memory"].values()) == {None}


def test_it_reports_redis_degraded_while_the_breaker_is_open(shared_redis, evaluator_running):
    gate.breaker.record_failure(hard=True)

    status, body = get("/api/monitoring/health/redis")
    health_status, health = get("/api/monitoring/health")

    assert (status, body["status"], body["redis"]["breaker"]) == (200, "degraded", "open")
    assert body["redis"]["connected"] is True
    assert (health_status, health["status"]) == (200, "warn")
    assert statuses(health) == {**dict.fromkeys(COMPONENTS, "pass"), "breaker": "warn"}
    assert health["checks"]["breaker"]["observed"]["state"] == "open"


# --- the database unreachable ---------------------------------------------------------------


@contextmanager
def database_unreachable():
    """The default connection aimed at a database that does not answer.

    Chosen over patching `check_database` or a cursor: the real query path runs unchanged and
    fails where it fails in production, in the driver's connect (PostgreSQL: connection refused
    on a port nothing listens on; SQLite: a file that cannot be opened). For PostgreSQL the
    pool is closed first (it holds the old address) and the broken settings connect directly;
    the next connection after this block builds a fresh pool from the real settings."""
    conn = connections["default"]
    real = conn.settings_dict
    conn.close()
    if settings.DATABASE_IS_POSTGRES:
        conn.close_pool()
        options = {k: v for k, v in real["OPTIONS"].items() if k != "pool"}
        broken = {**real, "HOST": "127.0.0.1", "PORT": str(free_port()), "OPTIONS": options}
    else:
        broken = {**real, "NAME": str(Path(tempfile.gettempdir()) / "no-such-dir" / "db.sqlite3")}
    conn.settings_dict = broken
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict = real


def test_it_is_not_ready_while_the_database_is_unreachable():
    with override_settings(REDIS_URL=None), database_unreachable():
        ready = Client().get("/api/monitoring/health/ready")
        health = Client().get("/api/monitoring/health")
        live = Client().get("/api/monitoring/health/live")

    assert (ready.status_code, ready["Content-Type"]) == (503, HEALTH_JSON)
    body = ready.json()
    assert body["status"] == "fail"
    assert statuses(body) == {"database": "fail", "redis": "pass"}
    assert body["checks"]["database"]["error"] == "OperationalError (details in the app's log)"
    assert (health.status_code, health.json()["status"]) == (503, "fail")
    assert statuses(health.json()) == {
        "database": "fail",
        "redis": "pass",
        "switch": "warn",
        "breaker": "pass",
        "channel_layer": "pass",
        "evaluator": "warn",
        "notifications": "warn",
    }
    assert live.status_code == 200
    # And the database is back for what follows.
    assert Client().get("/api/monitoring/health/ready").status_code == 200


# --- the evaluator --------------------------------------------------------------------------


def test_it_warns_when_no_evaluator_holds_the_lease(shared_redis):
    status, body = get("/api/monitoring/health")

    assert (status, body["status"]) == (200, "warn")
    assert statuses(body) == {**dict.fromkeys(COMPONENTS, "pass"), "evaluator": "warn"}
    assert body["checks"]["evaluator"]["error"] == "no evaluator holds the lease"


def test_it_passes_the_evaluator_when_monitoring_is_off(shared_redis):
    with override_settings(REDIS_MONITORING_ENABLED=False):
        status, body = get("/api/monitoring/health")

    assert (status, body["status"]) == (200, "pass")
    assert body["checks"]["evaluator"]["observed"] == {"enabled": False}
