"""The health endpoints in every state the runbook names: all well, caching switched off or
pinned off, no Redis configured, Redis stopped, the breaker open, the database unreachable and
no evaluator running; and no Redis password in any monitoring answer."""

import asyncio
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections
from django.test import AsyncClient, Client, override_settings

from monitoring.alerts import lease
from monitoring.alerts.evaluator import LEASE
from monitoring.cache import gate, switch
from monitoring.metrics import store
from monitoring.models import Alert
from tests.conftest import missing_service, turn_caching, using_redis
from tests.monitoring.metrics_support import TOKEN, bearer, reset_metrics
from tests.redis_servers import free_port, redis_server_binary

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
PASSWORD = "s3cret-pass"


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


# --- no secret in any answer ----------------------------------------------------------------


class PasswordRedis:
    """A throwaway redis-server that requires a password, ended by its own PID."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="opsdash-redis-auth-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> "PasswordRedis":
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        args += ["--requirepass", self.password, "--logfile", str(self.dir / "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        for _ in range(500):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.02)
        raise RuntimeError(f"password redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def password_redis():
    if redis_server_binary() is None:
        missing_service("a redis-server binary")
    server = PasswordRedis(PASSWORD)
    try:
        server.start()
        with using_redis(server.url):
            yield server
    finally:
        server.close()


async def first_stream_event() -> str:
    """The stream's text up to and including its first event (a snapshot)."""
    response = await AsyncClient().get("/api/monitoring/stream", headers=bearer())
    assert response.status_code == 200
    content = response.streaming_content
    text = ""
    try:
        async for chunk in content:
            text += chunk.decode()
            if "event: " in text:
                return text
    finally:
        await content.aclose()
        await sync_to_async(connections.close_all)()
    return text


def every_answer() -> dict[str, str]:
    client = Client()
    paths = [
        "/api/monitoring/health",
        "/api/monitoring/health/ready",
        "/api/monitoring/health/redis",
        "/api/monitoring/metrics/performance?window=5m",
        "/api/monitoring/alerts?state=all",
        "/metrics",
    ]
    answers = {path: client.get(path, headers=bearer()).content.decode() for path in paths}
    answers["/api/monitoring/stream"] = asyncio.run(first_stream_event())
    return answers


@override_settings(MONITORING_TOKEN=TOKEN)
def test_it_never_shows_the_redis_password(password_redis):
    assert settings.REDIS_URL == f"redis://:{PASSWORD}@127.0.0.1:{password_redis.port}/0"
    gate.get_or_load("leads", "k", lambda: "v")  # a real round trip with the password
    Alert.objects.create(
        rule="redis_down",
        severity="critical",
        state="firing",
        summary="Redis connection lost",
        threshold=1.0,
        started_at="2026-03-02T15:00:00Z",
    )
    store.flush()

    answers = every_answer()

    assert {path: PASSWORD in text for path, text in answers.items()} == dict.fromkeys(
        answers, False
    )
    redis_part = Client().get("/api/monitoring/health/redis").json()["redis"]
    assert redis_part["url"] == f"redis://:***@127.0.0.1:{password_redis.port}/0"
    assert redis_part["connected"] is True  # the password was used, just never shown
    assert "event: snapshot" in answers["/api/monitoring/stream"]


@override_settings(MONITORING_TOKEN=TOKEN)
def test_it_never_shows_the_redis_password_in_an_outage(password_redis):
    password_redis.stop()

    answers = every_answer()

    assert {path: PASSWORD in text for path, text in answers.items()} == dict.fromkeys(
        answers, False
    )
    assert Client().get("/api/monitoring/health/redis").status_code == 503
