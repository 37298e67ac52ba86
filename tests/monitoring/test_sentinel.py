"""Redis under Sentinel (its configuration: test_sentinel_config.py): discovery of the primary, and
failovers (forced with SENTINEL FAILOVER, and a primary killed) while reads and writes run
through the gate: no error reaches a caller, reads come from the database while no primary
can be used, caching comes back on the new primary, no entry is stale, and nothing is left
writing to the demoted node. Against a real primary, replica and three sentinels on free
loopback ports (tests/sentinel_servers.py)."""

import asyncio
import re
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
from opsdash.settings import channel_layer_host
from tests.conftest import missing_service, turn_caching, using_redis
from tests.monitoring.gate_support import LEAD, value_key
from tests.redis_servers import redis_server_binary
from tests.sentinel_servers import SERVICE, SentinelSet

ROOT = Path(__file__).resolve().parents[2]
# Every wait below has its bound; the sentinel timings (tests/sentinel_servers.py) keep each
# failover to a few seconds, the whole file well under 90 s.
pytestmark = pytest.mark.django_db(transaction=True)


# --- discovery and failover ---------------------------------------------------------------------


@pytest.fixture
def sentinels():
    if redis_server_binary() is None:
        missing_service("a redis-server binary")
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
