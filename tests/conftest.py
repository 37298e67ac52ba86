"""Shared fixtures: real PostgreSQL and Redis where the behaviour is theirs, throwaway
redis-servers for outages, and a per-test key prefix so tests never see each other's entries."""

import os
import uuid
from contextlib import contextmanager

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from monitoring.cache import gate, switch
from opsdash.settings import redis_cache_config
from tests.redis_servers import RedisServer, redis_server_binary

# Tests read the environment only for this: whether a missing service fails the run.
REQUIRE_SERVICES = (
    os.environ.get("CI", "").lower() == "true" or os.environ.get("OPSDASH_REQUIRE_SERVICES") == "1"
)


def missing_service(reason: str) -> None:
    """Skip, or with CI=true fail: CI must never pass by skipping."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config):
    """A `serve` running in this checkout has its embedded Redis socket under ./var/, which
    settings would pick up: the suite never uses it (a test must not touch a running
    instance's Redis); it starts its own instead."""
    if settings.REDIS_EMBEDDED:
        settings.REDIS_URL = None
        settings.REDIS_EMBEDDED = False
        settings.CACHES = {name: c for name, c in settings.CACHES.items() if name != "redis"}


@pytest.fixture(scope="session", autouse=True)
def _writer_beat_stops_before_the_test_database_goes(django_db_setup):
    """The test database is dropped when the session ends: this process's writer beat (see
    monitoring.cache.writers) stops first, so no beat holds a connection to it."""
    yield
    from monitoring.cache import writers

    writers.enlistment.abandon()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Background writes a test started (a webhook's deferred re-warm) finish inside it, before
    its fixtures (database, Redis, settings) are torn down."""
    try:
        return (yield)
    finally:
        from leads.webhooks.deferred import writer

        writer.drain()


def pytest_report_header(config):
    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return [
        f"opsdash: database={database} redis={settings.REDIS_URL or 'none'} "
        f"require_services={REQUIRE_SERVICES}"
    ]


@pytest.fixture(autouse=True)
def record_spool(tmp_path):
    """A spool of answered calls of this test's own: nothing one test answered is recorded
    into another's tables."""
    with override_settings(RECORD_SPOOL_DIR=tmp_path / "record-spool"):
        yield tmp_path / "record-spool"


@pytest.fixture(autouse=True)
def cache_prefix():
    """A fresh gate (breaker, switch copy, counters) and a key prefix of this test's own."""
    prefix = f"opsdash-test:{uuid.uuid4().hex[:10]}"
    gate.reset()
    with override_settings(REDIS_KEY_PREFIX=prefix):
        yield prefix
    gate.reset()


@pytest.fixture
def postgres():
    """Marks a test whose behaviour is PostgreSQL's (locking, concurrency)."""
    if not settings.DATABASE_IS_POSTGRES:
        missing_service("PostgreSQL (set DATABASE_URL=postgres://...)")


@pytest.fixture(scope="session")
def _fallback_redis():
    """Without REDIS_URL (a laptop), a private redis-server stands in for the shared one."""
    if redis_server_binary() is None:
        missing_service("Redis: set REDIS_URL, or install redis-server")
    server = RedisServer().start()
    yield server.url
    server.close()


@pytest.fixture
def shared_redis(request, cache_prefix):
    """The Redis in REDIS_URL (CI: the machine's Redis), reachable, with the gate on it. This
    test's keys are deleted afterwards; nothing else on that Redis is touched."""
    url = settings.REDIS_URL
    if not url:
        if REQUIRE_SERVICES:
            missing_service("Redis (set REDIS_URL=redis://...)")
        url = request.getfixturevalue("_fallback_redis")
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing_service(f"Redis at {url} is unreachable: {exc}")
    with using_redis(url):
        yield url
    keys = list(client.scan_iter(match=f"{cache_prefix}:*", count=500))
    if keys:
        client.delete(*keys)


@contextmanager
def using_redis(url: str, socket_timeout: float | None = None):
    """Point the cache gate at `url` for the duration."""
    timeouts = {}
    if socket_timeout is not None:
        timeouts = {"socket_timeout": socket_timeout, "connect_timeout": socket_timeout}
    caches = {**settings.CACHES, "redis": redis_cache_config(url, **timeouts)}
    overrides = {"REDIS_URL": url, "CACHES": caches}
    if socket_timeout is not None:
        overrides.update(REDIS_SOCKET_TIMEOUT=socket_timeout, REDIS_CONNECT_TIMEOUT=socket_timeout)
    with override_settings(**overrides):
        yield


@pytest.fixture
def redis_server():
    """A private redis-server the test may stop or hang, with the gate pointed at it."""
    if redis_server_binary() is None:
        missing_service("a redis-server binary")
    server = RedisServer().start()
    try:
        with using_redis(server.url):
            yield server
    finally:
        server.close()


def turn_caching(enabled: bool) -> None:
    switch.set_caching(enabled, actor="test", reason="test setup", source="system")
