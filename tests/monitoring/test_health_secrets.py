"""No Redis password in any monitoring answer (health, readiness, the Redis check, metrics,
/metrics), with Redis answering and in an outage."""

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.test import AsyncClient, Client, override_settings

from monitoring.cache import gate
from monitoring.metrics import store
from monitoring.models import Alert
from tests.conftest import missing_service, using_redis
from tests.monitoring.metrics_support import TOKEN, bearer, reset_metrics
from tests.redis_servers import free_port, redis_server_binary

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "s3cret-pass"


@pytest.fixture(autouse=True)
def fresh_window():
    reset_metrics()
    yield
    reset_metrics()


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
