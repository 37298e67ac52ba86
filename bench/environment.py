"""The throwaway world a scenario runs in, set up before Django and torn down after.

- Database: on PostgreSQL a dedicated database on DATABASE_URL's server, named per scenario and
  process (`opsdash_bench_<scenario>_<pid>`, so two runs at once, of the same scenario too, never
  drop each other's), created and migrated, dropped at the end; otherwise a temporary SQLite
  file.
- Redis: REDIS_URL's server, or a private redis-server when it is unset. Every key the bench
  writes carries a random prefix, and only keys with that prefix are deleted at the end (never
  FLUSHDB: the machine's Redis is shared).
- DEBUG off (Django would otherwise record every query), caching switched on, and the switch
  refreshed by the background thread a served process runs, so reads never query it inline.
"""

import os
import shutil
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import psycopg
import redis

from tests.redis_servers import RedisServer

BENCH_DATABASE = "opsdash_bench"
POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql", "psql"}


@contextmanager
def prepared(database: str = BENCH_DATABASE):
    """Configure, set up and migrate; yield; then delete the bench's keys and drop its database
    (`database`: the PostgreSQL database's name)."""
    prefix = f"opsdash-bench:{uuid.uuid4().hex[:10]}"
    with ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(_private_redis())
        database_url = stack.enter_context(
            _throwaway_database(os.environ.get("DATABASE_URL", ""), database)
        )
        os.environ.update(
            DJANGO_SETTINGS_MODULE="opsdash.settings",
            DEBUG="false",
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            REDIS_ENABLED="true",
            REDIS_KEY_PREFIX=prefix,
        )
        stack.callback(_delete_keys, redis_url, prefix)
        _setup_django()
        stack.callback(_close_database_connections)
        stack.enter_context(_caching_on())
        yield


def _setup_django() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


@contextmanager
def _caching_on():
    from monitoring.cache import switch

    if not switch.read_state().enabled:
        switch.set_caching(True, actor="bench", reason="bench", source="system")
    switch.view.refresh()
    refresher = switch.SwitchRefresher(switch.view)
    refresher.start()
    try:
        yield
    finally:
        refresher.stop()
        _wait_until_stopped(switch.view)


def _wait_until_stopped(view) -> None:
    """The refresher's loop has ended once it hands refreshing back to readers. (Not join():
    SwitchRefresher's `_stop` event shadows Thread._stop, so join() raises TypeError.)"""
    deadline = time.monotonic() + 10
    while view.background and time.monotonic() < deadline:
        time.sleep(0.01)


@contextmanager
def _private_redis():
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.close()


@contextmanager
def _throwaway_database(url: str, name: str):
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        directory = tempfile.mkdtemp(prefix="opsdash-bench-")
        try:
            yield f"sqlite:///{directory}/bench.sqlite3"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    server = parts._replace(scheme="postgresql", path="/postgres").geturl()
    _recreate_database(server, name)
    try:
        yield parts._replace(path=f"/{name}").geturl()
    finally:
        _drop_database(server, name)


def _recreate_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _close_database_connections() -> None:
    from django.db import connections

    for conn in connections.all():
        conn.close()
        close_pool = getattr(conn, "close_pool", None)
        if close_pool is not None:
            close_pool()


def _delete_keys(url: str, prefix: str) -> None:
    """Only the bench's keys: its own (prefix:...) and django-redis's (:1:prefix:...)."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"*{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)
    client.close()
