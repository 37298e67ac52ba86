"""The cache gate against real Redis: hits and misses, entries as plain data under their shape's
version, invalidation by scope in one round trip, the read-populate race guard, generation
bumps, the switch, and Redis stopped, hung and back again. Counters are the gate's own
(`gate.stats`); Redis commands are counted by the server (INFO commandstats); keys are read
straight from Redis where that proves the point."""

import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import pytest
import redis
from django.db import transaction
from django.test import override_settings

from monitoring.cache import Namespace, entries, gate, switch
from monitoring.cache.gate import CacheGate
from monitoring.models import SwitchAudit
from tests.conftest import turn_caching, using_redis
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)

ZERO = {
    "hits": 0,
    "misses": 0,
    "errors": 0,
    "bypassed": 0,
    "stores": 0,
    "stale_stores_refused": 0,
    "invalidations": 0,
    "unverified": 0,
    "unstorable": 0,
    "redis_calls": 0,
}
LEAD = Namespace("lead", shape=3, ttl=120)


def counters(namespace: str) -> dict[str, int]:
    """The gate's counters for `namespace`, latency left out (never asserted)."""
    stats = gate.stats.snapshot().get(namespace, ZERO)
    return {name: stats[name] for name in ZERO}


def counts(**nonzero: int) -> dict[str, int]:
    return {**ZERO, **nonzero}


class Loader:
    """A loader that counts its calls and returns `value`."""

    def __init__(self, value=None) -> None:
        self.value = value
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.value


def generation() -> int:
    return switch.read_state().generation


def value_key(prefix: str, gen: int, namespace: Namespace, key: str) -> str:
    return f"{prefix}:{gen}:v:{namespace.name}:m1.{namespace.shape}:{key}"


def commands_sent(server: RedisServer, action: Callable[[], object]) -> dict[str, int]:
    """Commands the server ran during `action()`, by name (INFO commandstats; the commands a
    script runs count too)."""
    before = server.command_calls()
    action()
    after = server.command_calls()
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in set(before) | set(after)}
    return {name: n for name, n in delta.items() if n}


def wait_for_probe_time(timeout: float = 10.0) -> None:
    """Until the breaker's cool-down is over (no timing is asserted, only waited for)."""
    deadline = time.monotonic() + timeout
    while gate.breaker.seconds_until_probe() > 0:
        assert time.monotonic() < deadline, "the breaker's cool-down never ended"
        time.sleep(0.02)


@pytest.fixture
def shared_client(shared_redis) -> redis.Redis:
    return redis.Redis.from_url(shared_redis, socket_timeout=2)


# --- reads ----------------------------------------------------------------------------------


def test_it_serves_a_hit_after_a_miss_without_calling_the_loader(shared_client, cache_prefix):
    loader = Loader({"name": "Ada"})

    first = gate.get_or_load(LEAD, "7:+15550001", loader)
    second = gate.get_or_load(LEAD, "7:+15550001", loader)

    assert first == second == {"name": "Ada"}
    assert loader.calls == 1
    # The miss: one read, its missing scope token created, one guarded store; the hit: one read.
    assert counters("lead") == counts(misses=1, stores=1, hits=1, redis_calls=4)
    key = value_key(cache_prefix, generation(), LEAD, "7:+15550001")
    tokens, value = msgspec.msgpack.decode(shared_client.get(key))
    assert value == {"name": "Ada"}
    assert tokens == [shared_client.get(f"{cache_prefix}:{generation()}:s:lead:7:+15550001")]
    assert 0 < shared_client.ttl(key) <= 120


def test_it_answers_a_hit_in_one_round_trip(redis_server):
    gate.get_or_load(LEAD, "1", Loader("row"))

    sent = commands_sent(redis_server, lambda: gate.get_or_load(LEAD, "1", Loader("other")))

    assert sent == {"mget": 1}


@pytest.mark.parametrize(
    "value",
    [
        {"at": datetime(2024, 5, 1, 12, 30, 15, 250, tzinfo=UTC), "tags": ["a", "b"], "n": 3},
        [1, "two", 3.5, None, {"nested": [True, False]}],
        None,
    ],
    ids=["dict-with-datetime", "list", "none"],
)
def test_it_round_trips_plain_data(shared_redis, value):
    loader = Loader(value)

    stored = gate.get_or_load(LEAD, "round-trip", loader)
    served = gate.get_or_load(LEAD, "round-trip", loader)

    assert stored == served == value
    assert type(served) is type(value)
    assert loader.calls == 1  # None is cached as a value, not taken for a miss


def test_it_stores_no_pickle_and_runs_none_it_finds(shared_client, cache_prefix):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))

    import pickle

    gate.get_or_load(LEAD, "1", Loader("original"))
    key = value_key(cache_prefix, generation(), LEAD, "1")
    shared_client.set(key, pickle.dumps(Evil()), ex=600)

    assert gate.get_or_load(LEAD, "1", Loader("reloaded")) == "reloaded"
    assert msgspec.msgpack.decode(shared_client.get(key))[1] == "reloaded"


def test_it_does_not_store_a_value_that_is_not_plain_data(shared_client, cache_prefix):
    loader = Loader({"when": object()})

    gate.get_or_load(LEAD, "1", loader)
    gate.get_or_load(LEAD, "1", loader)

    assert loader.calls == 2
    assert counters("lead")["unstorable"] == 2
    assert shared_client.get(value_key(cache_prefix, generation(), LEAD, "1")) is None


def test_it_never_reads_entries_of_another_shape_version(shared_client, cache_prefix):
    old_shape, new_shape = Namespace("lead", shape=1), Namespace("lead", shape=2)
    gate.get_or_load(old_shape, "1", Loader({"name": "Ada"}))

    assert gate.get_or_load(new_shape, "1", Loader({"first": "Ada"})) == {"first": "Ada"}
    assert gate.get_or_load(old_shape, "1", Loader("unused")) == {"name": "Ada"}


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x93\x01", msgspec.msgpack.encode(["not tokens", 1]), msgspec.msgpack.encode(7)],
    ids=["empty", "truncated", "tokens-not-bytes", "not-a-pair"],
)
def test_it_treats_a_corrupt_entry_as_a_miss_and_replaces_it(shared_client, cache_prefix, payload):
    gate.get_or_load(LEAD, "1", Loader("original"))
    key = value_key(cache_prefix, generation(), LEAD, "1")
    shared_client.set(key, payload, ex=600)
    loader = Loader("reloaded")

    assert gate.get_or_load(LEAD, "1", loader) == "reloaded"
    assert gate.get_or_load(LEAD, "1", loader) == "reloaded"
    assert loader.calls == 1


# --- invalidation ---------------------------------------------------------------------------


def test_it_makes_an_entry_stale_when_its_own_key_is_invalidated(shared_client, cache_prefix):
    gate.get_or_load(LEAD, "1", Loader("v1"))
    gate.get_or_load(LEAD, "2", Loader("other"))

    gate.invalidate(keys=[(LEAD, "1")])

    assert gate.get_or_load(LEAD, "1", Loader("v2")) == "v2"
    assert gate.get_or_load(LEAD, "2", Loader("unused")) == "other"


def test_it_makes_every_entry_of_a_scope_stale_and_nothing_else(shared_redis):
    lists = Namespace("leads")
    for page in range(5):
        gate.get_or_load(lists, f"page{page}", Loader(f"old {page}"), scopes=["lists"])
    gate.get_or_load(LEAD, "1", Loader("lead"), scopes=["phone:+1555"])

    gate.invalidate(scopes=["lists"])

    assert [
        gate.get_or_load(lists, f"page{p}", Loader(f"new {p}"), scopes=["lists"]) for p in range(5)
    ] == [f"new {p}" for p in range(5)]
    assert gate.get_or_load(LEAD, "1", Loader("unused"), scopes=["phone:+1555"]) == "lead"


def test_it_serves_an_entry_only_while_every_scope_it_depends_on_is_unchanged(shared_redis):
    ctx = Namespace("ctx")
    scopes = ["orgs", "phone:+1555"]
    gate.get_or_load(ctx, "n:+1555", Loader("v1"), scopes=scopes)

    gate.invalidate(scopes=["orgs"])
    assert gate.get_or_load(ctx, "n:+1555", Loader("v2"), scopes=scopes) == "v2"
    gate.invalidate(scopes=["phone:+1555"])
    assert gate.get_or_load(ctx, "n:+1555", Loader("v3"), scopes=scopes) == "v3"
    assert gate.get_or_load(ctx, "n:+1555", Loader("unused"), scopes=scopes) == "v3"


def test_it_invalidates_several_scopes_in_one_command(redis_server):
    gate.get_or_load(LEAD, "1", Loader("row"))
    gate.invalidate(scopes=["warm-up"])  # the script loaded into the server

    sent = commands_sent(
        redis_server, lambda: gate.invalidate(scopes=["lists", "counts", "phone:+1555"])
    )

    # One script; its three SETs are the tokens replaced.
    assert sent == {"evalsha": 1, "set": 3}


def test_it_refuses_to_store_a_value_loaded_before_a_concurrent_invalidation(shared_redis):
    gate.get_or_load(LEAD, "1", Loader("v0"))
    gate.invalidate(keys=[(LEAD, "1")])

    def load_then_a_write_commits():
        gate.invalidate(keys=[(LEAD, "1")])  # the writer, between the read and the store
        return "loaded before the write"

    assert gate.get_or_load(LEAD, "1", load_then_a_write_commits) == "loaded before the write"
    assert gate.get_or_load(LEAD, "1", Loader("after the write")) == "after the write"
    assert counters("lead")["stale_stores_refused"] == 1


def test_it_refuses_a_store_when_the_token_it_saw_missing_vanished_and_came_back(
    shared_client, cache_prefix
):
    """A reader finds no token, loads the old row; meanwhile a write invalidates, and the token
    is lost again (eviction, flush) and re-created by another reader: the first reader's store
    must be refused, since token values never repeat."""
    token = f"{cache_prefix}:{generation()}:s:lead:1"
    gate.get_or_load(LEAD, "warm-up", Loader("x"))  # the server checked, the marker planted

    def load_while_the_token_churns():
        gate.invalidate(keys=[(LEAD, "1")])
        shared_client.delete(token)
        gate.get_or_load(LEAD, "1", Loader("another reader's row"))
        return "the old row"

    shared_client.delete(token)
    assert gate.get_or_load(LEAD, "1", load_while_the_token_churns) == "the old row"
    assert gate.get_or_load(LEAD, "1", Loader("unused")) == "another reader's row"


def test_it_makes_old_entries_unreachable_on_a_generation_bump(shared_client, cache_prefix):
    gate.get_or_load(LEAD, "1", Loader("old"))
    before = generation()

    gate.flush(actor="ops", reason="test", source="cli")

    assert generation() == before + 1
    assert gate.get_or_load(LEAD, "1", Loader("new")) == "new"
    # The old generation's marker is retired at once: a process still on it stops using it.
    assert shared_client.get(f"{cache_prefix}:{before}:marker") is None
    assert shared_client.get(f"{cache_prefix}:{before + 1}:marker") is not None


def test_it_defers_a_store_read_inside_a_transaction_until_it_commits(shared_client, cache_prefix):
    gate.get_or_load(LEAD, "warm-up", Loader("x"))
    key = value_key(cache_prefix, generation(), LEAD, "1")

    with pytest.raises(RuntimeError), transaction.atomic():
        gate.get_or_load(LEAD, "1", Loader("a row that is rolled back"))
        raise RuntimeError("rolled back")
    assert shared_client.get(key) is None

    with transaction.atomic():
        gate.get_or_load(LEAD, "1", Loader("committed"))
        assert shared_client.get(key) is None
    assert msgspec.msgpack.decode(shared_client.get(key))[1] == "committed"


# --- the switch -----------------------------------------------------------------------------


def test_it_bypasses_redis_entirely_while_switched_off(redis_server):
    turn_caching(False)
    loader = Loader("row")

    sent = commands_sent(redis_server, lambda: [gate.get_or_load(LEAD, "1", loader) for _ in "ab"])

    assert sent == {}
    assert loader.calls == 2
    assert counters("lead") == counts(bypassed=2)


def test_it_still_sends_invalidations_while_switched_off_at_runtime(redis_server):
    gate.get_or_load(LEAD, "1", Loader("row"))
    gate.invalidate(scopes=["warm-up"])  # the script loaded into the server
    turn_caching(False)

    sent = commands_sent(
        redis_server, lambda: gate.invalidate(keys=[(LEAD, "1")], scopes=["lists"])
    )

    assert sent == {"evalsha": 1, "set": 2}


def test_it_sends_nothing_at_all_when_pinned_off_by_the_environment(redis_server):
    with override_settings(REDIS_ENABLED=False):
        gate.reset()
        sent = commands_sent(
            redis_server,
            lambda: (gate.get_or_load(LEAD, "1", Loader("row")), gate.invalidate(scopes=["lists"])),
        )
        assert sent == {}
        assert switch.read_state().invalidations_skipped is True


# --- Redis stopped, hung, and back ----------------------------------------------------------


@override_settings(REDIS_BREAKER_FAILURES=3, REDIS_BREAKER_COOLDOWN=60)
def test_it_serves_from_the_loader_and_opens_the_breaker_when_redis_is_stopped(redis_server):
    gate.get_or_load(LEAD, "1", Loader("cached row"))  # a connection in the pool
    redis_server.stop()
    loader = Loader("row")

    assert [gate.get_or_load(LEAD, "1", loader) for _ in range(2)] == ["row", "row"]
    assert gate.breaker.state == "closed"
    assert gate.get_or_load(LEAD, "1", loader) == "row"
    assert gate.breaker.state == "open"
    assert [gate.get_or_load(LEAD, "1", loader) for _ in range(2)] == ["row", "row"]

    assert loader.calls == 5
    assert counters("lead") == counts(misses=1, stores=1, errors=3, bypassed=2, redis_calls=3 + 3)
    assert [(old, new) for _, old, new in gate.stats.breaker_changes] == [("closed", "open")]


@override_settings(REDIS_BREAKER_FAILURES=3, REDIS_BREAKER_COOLDOWN=60)
def test_it_bumps_the_generation_when_an_invalidation_is_lost(redis_server):
    gate.get_or_load(LEAD, "1", Loader("row"))
    before = generation()
    redis_server.stop()

    gate.invalidate(keys=[(LEAD, "1")])

    assert generation() == before + 1
    assert switch.view.current().generation == before + 1
    audit = SwitchAudit.objects.get(action="lost")
    assert (audit.actor, audit.source, audit.generation) == ("system", "system", before + 1)
    assert audit.reason == "a cache invalidation could not reach Redis"
    # Sent twice (one stall must not cost the cache), both refused.
    assert counters("lead")["errors"] == 2


def test_it_recovers_with_a_generation_bump_once_redis_is_back(redis_server, cache_prefix):
    with override_settings(REDIS_BREAKER_FAILURES=3, REDIS_BREAKER_COOLDOWN=0.2):
        gate.get_or_load(LEAD, "1", Loader("row before the outage"))
        before = generation()
        redis_server.stop()
        for _ in range(3):
            gate.get_or_load(LEAD, "1", Loader("row during the outage"))
        assert gate.breaker.state == "open"
        gate.invalidate(keys=[(LEAD, "1")])  # a write during the outage: skipped, noted
        assert switch.read_state().invalidations_skipped is True
        redis_server.start()  # a new process on the same port, empty
        wait_for_probe_time()
        loader = Loader("row after the outage")

        assert gate.get_or_load(LEAD, "1", loader) == "row after the outage"
        assert gate.get_or_load(LEAD, "1", loader) == "row after the outage"

        assert gate.breaker.state == "closed"
        assert loader.calls == 1
        assert generation() == before + 1
        audit = SwitchAudit.objects.get()
        assert (audit.actor, audit.action, audit.source) == ("system", "reset", "system")
        assert "the Redis server changed" in audit.reason
        assert "skipped their invalidations" in audit.reason
        key = value_key(cache_prefix, before + 1, LEAD, "1")
        assert msgspec.msgpack.decode(redis_server.client().get(key))[1] == "row after the outage"
        assert [(old, new) for _, old, new in gate.stats.breaker_changes] == [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
        ]


def test_it_opens_the_breaker_after_repeated_timeouts_when_redis_hangs(redis_server):
    with (
        using_redis(redis_server.url, socket_timeout=0.3),
        override_settings(REDIS_BREAKER_FAILURES=3, REDIS_BREAKER_COOLDOWN=60),
    ):
        gate.get_or_load(LEAD, "1", Loader("cached row"))  # a connection in the pool
        redis_server.hang()
        loader = Loader("row")

        for _ in range(3):
            assert gate.get_or_load(LEAD, "1", loader) == "row"
        assert gate.breaker.state == "open"
        assert gate.get_or_load(LEAD, "1", loader) == "row"
        assert loader.calls == 4
        assert counters("lead") == counts(
            misses=1, stores=1, errors=3, bypassed=1, redis_calls=3 + 3
        )


def test_it_reads_nothing_while_a_check_of_the_server_is_under_way(redis_server):
    """A second gate (another thread's view) never serves from a server not yet checked."""
    other = CacheGate()
    gate.get_or_load(LEAD, "1", Loader("row"))
    other._verify_lock.acquire()
    try:
        assert other.get_or_load(LEAD, "1", Loader("from the database")) == "from the database"
    finally:
        other._verify_lock.release()
    assert other.get_or_load(LEAD, "1", Loader("unused")) == "row"
    other.reset()


def test_entries_module_names_keys_with_format_and_shape():
    assert entries.value_name("p", 4, Namespace("ctx", shape=2), "k") == "p:4:v:ctx:m1.2:k"


# --- name resolution ------------------------------------------------------------------------


def test_it_costs_no_more_than_the_connect_timeout_when_the_resolver_is_slow(
    redis_server, monkeypatch
):
    """A managed Redis is reached by name; a resolver that takes 1 s must not hold a read."""
    import socket

    from monitoring.cache import connection

    lookups = []

    def slow_lookup(host, port, *args):
        lookups.append(host)
        time.sleep(1.0)
        return socket.getaddrinfo("127.0.0.1", port, *args)

    monkeypatch.setattr(connection, "resolver", connection.BoundedResolver(lookup=slow_lookup))
    url = f"redis://cache.example.test:{redis_server.port}/0"
    with using_redis(url, socket_timeout=0.05), override_settings(REDIS_BREAKER_COOLDOWN=0.2):
        gate.reset()
        loader = Loader("row")
        started = time.perf_counter()
        assert gate.get_or_load(LEAD, "1", loader) == "row"
        waited = time.perf_counter() - started
        # One connect timeout (0.05 s), with a generous margin for a noisy machine.
        assert waited < 0.5, waited
        assert counters("lead")["errors"] + counters("verify")["errors"] >= 1
        # Once the lookup has finished, its answer is used: the gate caches on that server.
        time.sleep(1.2)
        wait_for_probe_time()
        for _ in range(3):
            gate.get_or_load(LEAD, "1", loader)
        assert counters("lead")["hits"] >= 1
        assert lookups == ["cache.example.test"]
