"""Redis under Sentinel: the configuration and its system checks, discovery of the primary, and
failovers (forced with SENTINEL FAILOVER, and a primary killed) while reads and writes run
through the gate: no error reaches a caller, reads come from the database while no primary
can be used, caching comes back on the new primary, no entry is stale, and nothing is left
writing to the demoted node. Against a real primary, replica and three sentinels on free
loopback ports (tests/sentinel_servers.py)."""

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings

from monitoring.cache import entries, gate, switch
from monitoring.cache.connection import GateSentinelConnection, async_client, identity_of
from monitoring.models import SwitchAudit
from monitoring.validation import checks as validation_checks
from monitoring.validation.registry import ValidationContext
from opsdash.checks import check_redis
from opsdash.settings import channel_layer_host, parse_sentinel_url, redis_cache_config
from tests.conftest import turn_caching, using_redis
from tests.monitoring.gate_support import LEAD, value_key
from tests.redis_servers import redis_server_binary
from tests.sentinel_servers import SERVICE, SentinelSet

ROOT = Path(__file__).resolve().parents[2]
# Every wait below has its bound; the sentinel timings (tests/sentinel_servers.py) keep each
# failover to a few seconds, the whole file well under 90 s.
pytestmark = pytest.mark.django_db(transaction=True)


# --- configuration ----------------------------------------------------------------------------


def test_it_parses_a_sentinel_url_with_hosts_service_db_and_password():
    config = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380,s3/cache/2")

    assert config == {
        "sentinels": [("10.0.0.1", 26379), ("::1", 26380), ("s3", 26379)],
        "service": "cache",
        "db": 2,
        "username": None,
        "password": "s3cret",
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://10.0.0.1:26379", "no service name"),
        ("redis+sentinel://10.0.0.1:26379/cache/x", "is not SERVICE or SERVICE/DB"),
        ("redis+sentinel://10.0.0.1:port/cache", "'10.0.0.1:port' is not host:port"),
        ("redis+sentinel:///cache", "no sentinel address"),
    ],
)
def test_it_refuses_a_malformed_sentinel_url_naming_the_fault(url, message):
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_it_builds_the_cache_on_the_gates_sentinel_connections():
    cache = redis_cache_config("redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/cache/3")

    assert cache["LOCATION"] == "redis://:pw@cache/3"
    assert cache["OPTIONS"]["CONNECTION_FACTORY"] == (
        "monitoring.cache.connection.GateSentinelConnectionFactory"
    )
    assert cache["OPTIONS"]["SENTINELS"] == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert cache["OPTIONS"]["SOCKET_TIMEOUT"] == settings.REDIS_SOCKET_TIMEOUT


def test_it_gives_channels_redis_the_sentinels_and_the_service():
    host = channel_layer_host("redis+sentinel://127.0.0.1:1,127.0.0.1:2/layer/1")

    assert host == {
        "sentinels": [("127.0.0.1", 1), ("127.0.0.1", 2)],
        "master_name": "layer",
        "db": 1,
        "sentinel_kwargs": {},
    }
    assert channel_layer_host("redis://127.0.0.1:1/1") == "redis://127.0.0.1:1/1"


def test_it_reports_a_sentinel_configuration_error_as_a_system_check():
    with override_settings(REDIS_SENTINEL_ERROR="no service name"):
        (problem,) = [p for p in check_redis() if p.id == "opsdash.E008"]

    assert problem.msg == (
        "The Redis Sentinel configuration of the cache is invalid: no service name."
    )
    assert "REDIS_SENTINEL_SERVICE" in problem.hint


def _check_with(**environment: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CHANNEL_"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**keep, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_stops_start_up_checks_on_sentinels_without_a_service_name():
    result = _check_with(REDIS_SENTINELS="127.0.0.1:26379", CHANNEL_REDIS_URL="redis+sentinel://x")

    assert result.returncode == 1
    assert (
        "opsdash.E008) The Redis Sentinel configuration of the cache is invalid: "
        "REDIS_SENTINELS and REDIS_SENTINEL_SERVICE must be set together."
    ) in result.stderr
    assert (
        "opsdash.E008) The Redis Sentinel configuration of the channel layer is invalid: "
        "no service name: write redis+sentinel://host:port,.../SERVICE/0."
    ) in result.stderr


def test_it_accepts_sentinels_with_a_service_at_start_up():
    result = _check_with(
        REDIS_SENTINELS="127.0.0.1:26379,127.0.0.1:26380", REDIS_SENTINEL_SERVICE="cache"
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


# --- discovery and failover ---------------------------------------------------------------------


@pytest.fixture
def sentinels():
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary")
    servers = SentinelSet().start()
    try:
        with (
            using_redis(servers.url),
            override_settings(REDIS_SERVER_SETTLE_SECONDS=0, REDIS_BREAKER_COOLDOWN=0.3),
        ):
            gate.reset()
            yield servers
    finally:
        servers.close()
        gate.reset()


class Traffic:
    """Reads and writes through the gate, as a request would make them: each write changes the
    "database" (a dict) and then invalidates; each read must show what the last write wrote."""

    def __init__(self, keys: int = 5) -> None:
        self.database = dict.fromkeys(map(str, range(keys)), 0)
        self.loads = self.errors = self.stale = self.reads = 0

    def read(self, key: str) -> None:
        def load():
            self.loads += 1
            return self.database[key]

        self.reads += 1
        try:
            value = gate.get_or_load(LEAD, key, load)
        except Exception:
            self.errors += 1
            return
        if value != self.database[key]:
            self.stale += 1

    def write(self, key: str) -> None:
        self.database[key] += 1
        try:
            gate.invalidate(keys=[(LEAD, key)])
        except Exception:
            self.errors += 1

    def round(self, n: int) -> None:
        for key in self.database:
            if (n + int(key)) % 3 == 0:
                self.write(key)
            self.read(key)

    def run_until(self, done, timeout: float = 40) -> None:
        deadline, n = time.monotonic() + timeout, 0
        while not done() and time.monotonic() < deadline:
            self.round(n)
            n += 1
            time.sleep(0.005)


def _cached_on(node, key: str) -> bool:
    name = value_key(settings.REDIS_KEY_PREFIX, switch.read_state().generation, LEAD, key)
    return node.client().exists(name) == 1


def _caching_resumed_on(node, after_generation: int = 0) -> bool:
    """Every key cached on `node` under a generation newer than `after_generation` (the new
    primary holds the old generation's entries, replicated: those must not count)."""
    return switch.read_state().generation > after_generation and all(
        _cached_on(node, key) for key in "01234"
    )


def test_it_finds_the_primary_the_sentinels_name_and_caches_there(sentinels):
    turn_caching(True)
    traffic = Traffic()

    traffic.run_until(lambda: _caching_resumed_on(sentinels.primary), timeout=10)

    assert (traffic.errors, traffic.stale) == (0, 0)
    assert _caching_resumed_on(sentinels.primary)
    run_id = sentinels.primary.client().info("server")["run_id"]
    assert identity_of(gate._redis()).trusted == run_id
    assert switch.read_state().server_id == run_id
    pool = gate._redis().connection_pool
    assert pool.connection_class is GateSentinelConnection
    assert pool.get_master_address() == ("127.0.0.1", sentinels.primary.port)
    assert pool.service_name == SERVICE
    hits = gate.stats.snapshot()["lead"]["hits"]

    async def on_the_loop():
        client = async_client(settings.CACHES["redis"])
        server = await client.info("server")
        await client.aclose()
        cached = [await gate.aget_or_load(LEAD, key, lambda: "database") for key in "01234"]
        return server["run_id"], identity_of(client).seen, cached

    assert asyncio.run(on_the_loop()) == (run_id, run_id, list(traffic.database.values()))
    assert gate.stats.snapshot()["lead"]["hits"] == hits + 5


def _demoted(node) -> bool:
    return node.client().info("replication")["role"] == "slave"


def _gate_clients_on(node) -> list[dict]:
    """Normal client connections to `node` other than the sentinels' and this check's own."""
    admin = node.client()
    admin.client_setname("test-admin")
    return [
        c
        for c in admin.client_list()
        if "N" in c["flags"] and c["name"] != "test-admin" and not c["name"].startswith("sentinel-")
    ]


def test_it_fails_over_with_no_error_no_stale_entry_and_no_write_to_the_demoted_node(sentinels):
    turn_caching(True)
    traffic = Traffic()
    old = sentinels.primary
    traffic.run_until(lambda: _caching_resumed_on(old), timeout=10)
    generation = switch.read_state().generation
    moved = threading.Event()

    def fail_over():
        sentinels.fail_over()
        moved.set()

    mover = threading.Thread(target=fail_over)
    mover.start()
    traffic.run_until(moved.is_set, timeout=20)
    mover.join()
    new = sentinels.nodes[sentinels.primary_port()]
    traffic.run_until(lambda: _caching_resumed_on(new, generation), timeout=20)
    # The sentinels demote the old primary only when they next look at it (INFO, every 10 s):
    # the gate left it long before, on the sentinels' word.
    assert _caching_resumed_on(new, generation), "caching never resumed on the new primary"
    assert not _demoted(old)
    traffic.run_until(lambda: _demoted(old), timeout=20)
    left_on_demoted = _gate_clients_on(old)
    readonly = _readonly_errors(old)
    old.kill()
    hits = gate.stats.snapshot()["lead"]["hits"]
    traffic.run_until(lambda: gate.stats.snapshot()["lead"]["hits"] > hits + 20, timeout=5)

    assert (traffic.errors, traffic.stale) == (0, 0)
    assert (left_on_demoted, readonly) == ([], 0)  # no write even tried on the demoted node
    state = switch.read_state()
    assert state.generation > generation
    assert state.server_id == new.client().info("server")["run_id"]
    audit = SwitchAudit.objects.filter(generation=state.generation).get()
    assert "the Redis server changed" in audit.reason
    assert gate._redis().connection_pool.get_master_address() == ("127.0.0.1", new.port)


def test_it_serves_from_the_database_while_no_primary_is_known_then_caches_on_the_new_one(
    sentinels,
):
    turn_caching(True)
    traffic = Traffic()
    old = sentinels.primary
    traffic.run_until(lambda: _caching_resumed_on(old), timeout=10)
    generation = switch.read_state().generation
    old.kill()
    started = time.monotonic()
    traffic.run_until(lambda: gate.breaker.state != "closed", timeout=10)
    loads_while_down = traffic.loads
    traffic.run_until(lambda: sentinels.primary_port() != old.port, timeout=20)
    new = sentinels.nodes[sentinels.primary_port()]
    traffic.run_until(lambda: _caching_resumed_on(new, generation), timeout=20)
    elapsed = time.monotonic() - started
    hits = gate.stats.snapshot()["lead"]["hits"]
    traffic.run_until(lambda: gate.stats.snapshot()["lead"]["hits"] > hits + 20, timeout=5)

    assert (traffic.errors, traffic.stale) == (0, 0)
    assert traffic.loads >= loads_while_down
    assert gate.stats.snapshot()["lead"]["errors"] >= 1
    assert _caching_resumed_on(new, generation)
    assert gate.stats.snapshot()["lead"]["hits"] > hits
    assert elapsed < 20
    audit = SwitchAudit.objects.filter(generation=switch.read_state().generation).get()
    assert "the Redis server changed" in audit.reason
    assert identity_of(gate._redis()).trusted == new.client().info("server")["run_id"]


def _readonly_errors(node) -> int:
    return node.client().info("errorstats").get("errorstat_READONLY", {"count": 0})["count"]


def test_it_takes_readonly_from_a_demoted_primary_as_a_fault_and_finds_the_new_one(sentinels):
    turn_caching(True)
    traffic = Traffic()
    old = sentinels.primary
    traffic.run_until(lambda: _caching_resumed_on(old), timeout=10)
    sentinels.fail_over()
    new = sentinels.nodes[sentinels.primary_port()]
    traffic.run_until(lambda: _demoted(old) and _caching_resumed_on(new, 1), timeout=20)
    # A connection to the old primary that its demotion did not close (a managed service, or
    # sentinels whose CLIENT KILL is renamed), as if opened before: next in line in the pool.
    pool = gate._redis().connection_pool
    identity = identity_of(gate._redis())
    stale = pool.make_connection()
    stale.connect_to(("127.0.0.1", old.port))
    identity.seen, identity.changed = identity.trusted, False
    pool._available_connections.append(stale)
    errors = gate.stats.snapshot()["lead"]["errors"]
    token = entries.scope_name(settings.REDIS_KEY_PREFIX, switch.read_state().generation, "lead:0")
    before = new.client().get(token)

    traffic.write("0")

    assert _readonly_errors(old) == 1  # refused there: nothing written to the demoted node
    assert gate.stats.snapshot()["lead"]["errors"] == errors + 1
    assert new.client().get(token) != before  # the second try found the new primary
    assert stale.host is None or stale._sock is None
    traffic.run_until(lambda: _caching_resumed_on(new, 1), timeout=5)
    assert (traffic.errors, traffic.stale) == (0, 0)


# --- reporting ----------------------------------------------------------------------------------


def _redis_check() -> list[str]:
    out = StringIO()
    call_command("redis_check", stdout=out)
    return out.getvalue().splitlines()


def test_it_reports_the_topology_and_the_role_it_talks_to(sentinels):
    turn_caching(True)
    primary, replica = sentinels.primary, sentinels.replica
    primary.client().wait(1, 2000)

    lines = _redis_check()

    assert lines[0] == f"Redis:       {sentinels.url} (Redis Sentinel, plain TCP)"
    assert lines[2] == f"sentinels:   3 of 3 answered for '{SERVICE}' (quorum 2)"
    assert lines[3:6] == [
        f"  sentinel:  127.0.0.1:{s.port}: names 127.0.0.1:{primary.port} (master)"
        for s in sentinels.sentinels
    ]
    assert lines[6] == f"primary:     127.0.0.1:{primary.port}"
    assert re.fullmatch(
        rf"replica:     127\.0\.0\.1:{replica.port} online, lag \d+ s \(\d+ bytes behind\)",
        lines[7],
    )
    assert re.fullmatch(r"clients:     \d+ connected of maxclients 10000 \(\d+\.\d %\)", lines[8])
    assert lines[-1] == "Redis works."
    response = Client().get("/api/monitoring/health/redis")
    server = response.json()["redis"]["server"]
    assert (server["role"], server["sentinel"]) == ("master", True)
    outcome = validation_checks.connection(ValidationContext())
    version = primary.client().info("server")["redis_version"]
    assert outcome.status == "pass"
    assert outcome.detail.startswith(
        f"{sentinels.url} (Redis Sentinel, plain TCP): Redis {version}, SET/GET/DEL round trip "
        f"ok; sentinels: 3 of 3 answered for '{SERVICE}' (quorum 2); sentinel: 127.0.0.1:"
    )
    assert f"; primary: 127.0.0.1:{primary.port}; replica: 127.0.0.1:{replica.port} online" in (
        outcome.detail
    )
    layer = RedisChannelLayer(hosts=[channel_layer_host(sentinels.url)])

    async def through_the_layer():
        await layer.send("sentinel-test", {"type": "hello"})
        received = await layer.receive("sentinel-test")
        await layer.close_pools()
        return received

    assert asyncio.run(through_the_layer()) == {"type": "hello"}

    for sentinel in sentinels.sentinels:
        sentinel.close()
    with pytest.raises(CommandError) as failed:
        _redis_check()
    addresses = ", ".join(f"127.0.0.1:{s.port}" for s in sentinels.sentinels)
    assert str(failed.value) == (
        f"no primary: none of the sentinels {addresses} answered (down, wrong port, or "
        "REDIS_SENTINEL_PASSWORD wrong)"
    )
