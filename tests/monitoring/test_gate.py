"""The cache gate against real Redis: hits and misses, invalidation by key and by group in one
round trip, the read-populate race guard, generation bumps, the switch, and Redis stopped, hung
and back again. Counters are the gate's own (`gate.stats`); Redis commands are counted by the
server (INFO commandstats); keys are read straight from Redis where that proves the point."""

import pickle
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis
from django.test import override_settings

from monitoring.cache import gate, switch
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
    "redis_calls": 0,
}


def counters(namespace: str) -> dict[str, int]:
    """The gate's counters for `namespace`, latency left out (never asserted)."""
    stats = gate.stats.snapshot()[namespace]
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


def value_key(prefix: str, gen: int, namespace: str, key: str) -> str:
    return f"{prefix}:{gen}:v:{namespace}:{key}"


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    names = set(before) | set(after)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in names}
    return {name: n for name, n in delta.items() if n}


def commands_sent(server: RedisServer, action: Callable[[], object]) -> dict[str, int]:
    """Commands the server ran during `action()`, by name (INFO commandstats)."""
    before = server.command_calls()
    action()
    return _delta(before, server.command_calls())


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

    first = gate.get_or_load("lead", "7:+15550001", loader, ttl=120)
    second = gate.get_or_load("lead", "7:+15550001", loader, ttl=120)

    assert first == second == {"name": "Ada"}
    assert loader.calls == 1
    assert counters("lead") == counts(misses=1, stores=1, hits=1, redis_calls=3)
    key = value_key(cache_prefix, generation(), "lead", "7:+15550001")
    assert pickle.loads(shared_client.get(key)) == {"name": "Ada"}
    assert 0 < shared_client.ttl(key) <= 120


@pytest.mark.parametrize(
    "value",
    [
        {"at": datetime(2024, 5, 1, 12, 30, 15, 250, tzinfo=UTC), "tags": ("a", "b"), "n": 3},
        [1, "two", 3.5, None, {"nested": [True, False]}],
        None,
    ],
    ids=["dict-with-datetime", "list", "none"],
)
def test_it_round_trips_values(shared_redis, value):
    loader = Loader(value)

    stored = gate.get_or_load("lead", "round-trip", loader)
    served = gate.get_or_load("lead", "round-trip", loader)

    assert stored == value
    assert served == value
    assert type(served) is type(value)
    assert loader.calls == 1  # None is cached as a value, not taken for a miss
    assert counters("lead") == counts(misses=1, stores=1, hits=1, redis_calls=3)


def test_it_treats_an_unreadable_entry_as_a_miss_and_replaces_it(shared_client, cache_prefix):
    gate.get_or_load("lead", "1", Loader("original"))
    key = value_key(cache_prefix, generation(), "lead", "1")
    shared_client.set(key, b"not a pickle", ex=600)
    loader = Loader("reloaded")

    assert gate.get_or_load("lead", "1", loader) == "reloaded"
    assert gate.get_or_load("lead", "1", loader) == "reloaded"

    assert loader.calls == 1
    assert pickle.loads(shared_client.get(key)) == "reloaded"
    assert counters("lead") == counts(misses=2, stores=2, hits=1, redis_calls=5)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        pickle.dumps({"name": "Ada", "tags": list(range(20))})[:-7],
        # A well-formed pickle whose object cannot be rebuilt (TypeError), as an entry written
        # by code whose class has since changed its constructor would be.
        b"\x80\x05\x8c\x08datetime\x94\x8c\x08datetime\x94\x93\x94)R\x94.",
    ],
    ids=["empty", "truncated", "unconstructible"],
)
def test_it_treats_other_corrupt_payloads_as_a_miss(shared_client, cache_prefix, payload):
    key = value_key(cache_prefix, generation(), "lead", "1")
    shared_client.set(key, payload, ex=600)
    loader = Loader("reloaded")

    assert gate.get_or_load("lead", "1", loader) == "reloaded"

    assert loader.calls == 1
    assert pickle.loads(shared_client.get(key)) == "reloaded"
    assert counters("lead") == counts(misses=1, stores=1, redis_calls=2)


# --- invalidation ---------------------------------------------------------------------------


def test_it_drops_an_invalidated_key(shared_client, cache_prefix):
    loader = Loader("row")
    other = Loader("other row")
    gate.get_or_load("lead", "1", loader)
    gate.get_or_load("lead", "2", other)

    gate.invalidate(keys=[("lead", "1")])

    gen = generation()
    assert shared_client.exists(value_key(cache_prefix, gen, "lead", "1")) == 0
    assert shared_client.get(f"{cache_prefix}:{gen}:t:lead:1") == b"1"
    assert gate.get_or_load("lead", "1", loader) == "row"
    assert gate.get_or_load("lead", "2", other) == "other row"
    assert loader.calls == 2
    assert other.calls == 1
    assert counters("lead") == counts(misses=3, stores=3, hits=1, invalidations=1, redis_calls=8)


def test_it_drops_every_member_of_an_invalidated_group_and_nothing_else(
    shared_client, cache_prefix
):
    page1, page2 = Loader("page 1"), Loader("page 2")
    outside, other_group = Loader("not grouped"), Loader("counts")
    gate.get_or_load("leads", "page-1", page1, group="lists")
    gate.get_or_load("leads", "page-2", page2, group="lists")
    gate.get_or_load("leads", "single", outside)
    gate.get_or_load("leads", "totals", other_group, group="counts")
    gen = generation()
    members = f"{cache_prefix}:{gen}:m:leads:lists"
    assert shared_client.smembers(members) == {
        value_key(cache_prefix, gen, "leads", "page-1").encode(),
        value_key(cache_prefix, gen, "leads", "page-2").encode(),
    }

    gate.invalidate(groups=[("leads", "lists")])

    assert shared_client.exists(members) == 0
    assert shared_client.exists(value_key(cache_prefix, gen, "leads", "page-1")) == 0
    assert shared_client.exists(value_key(cache_prefix, gen, "leads", "page-2")) == 0
    assert shared_client.get(f"{cache_prefix}:{gen}:t:leads:g:lists") == b"1"
    assert gate.get_or_load("leads", "page-1", page1, group="lists") == "page 1"
    assert gate.get_or_load("leads", "page-2", page2, group="lists") == "page 2"
    assert gate.get_or_load("leads", "single", outside) == "not grouped"
    assert gate.get_or_load("leads", "totals", other_group, group="counts") == "counts"
    assert (page1.calls, page2.calls, outside.calls, other_group.calls) == (2, 2, 1, 1)
    assert counters("leads") == counts(misses=6, stores=6, hits=2, invalidations=1, redis_calls=15)


def test_it_drops_a_group_member_that_outlives_a_later_member(shared_client, cache_prefix):
    long_lived = Loader("long-lived")
    gate.get_or_load("leads", "page-1", long_lived, ttl=600, group="lists")
    gate.get_or_load("leads", "page-2", Loader("short-lived"), ttl=1, group="lists")
    gen = generation()
    long_lived_key = value_key(cache_prefix, gen, "leads", "page-1")
    short_lived_key = value_key(cache_prefix, gen, "leads", "page-2")
    deadline = time.monotonic() + 5
    while shared_client.exists(short_lived_key):  # until the short-lived member has expired
        assert time.monotonic() < deadline, "the 1 s entry never expired"
        time.sleep(0.05)
    assert shared_client.exists(long_lived_key) == 1

    gate.invalidate(groups=[("leads", "lists")])

    assert shared_client.exists(long_lived_key) == 0
    assert gate.get_or_load("leads", "page-1", long_lived, ttl=600, group="lists") == "long-lived"
    assert long_lived.calls == 2


def test_it_invalidates_several_keys_and_groups_in_one_command(redis_server, cache_prefix):
    gate.invalidate(keys=[("lead", "warm-up")])  # connects and loads the script
    gate.get_or_load("lead", "1", Loader("lead"))
    gate.get_or_load("ctx", "+1555:+1666", Loader("context"))
    gate.get_or_load("leads", "page-1", Loader("page 1"), group="lists")
    gate.get_or_load("leads", "page-2", Loader("page 2"), group="lists")
    gate.get_or_load("counts", "all", Loader("counts"), group="counts")
    calls_before = counters("lead")["redis_calls"]

    sent = commands_sent(
        redis_server,
        lambda: gate.invalidate(
            keys=[("lead", "1"), ("ctx", "+1555:+1666")],
            groups=[("leads", "lists"), ("counts", "counts")],
        ),
    )

    # One EVALSHA; the INCR/EXPIRE/SMEMBERS/DEL are the script's own, run inside it.
    assert sent == {"evalsha": 1, "incr": 4, "expire": 4, "smembers": 2, "del": 7}
    assert counters("lead")["redis_calls"] == calls_before + 1
    assert redis_server.client().keys(f"{cache_prefix}:*:v:*") == []
    assert redis_server.client().keys(f"{cache_prefix}:*:m:*") == []
    for namespace in ("lead", "ctx", "leads", "counts"):
        expected = 2 if namespace == "lead" else 1  # "lead" counts the warm-up too
        assert counters(namespace)["invalidations"] == expected


def test_it_refuses_to_store_a_value_loaded_before_a_concurrent_invalidation(
    shared_client, cache_prefix
):
    def loader_racing_a_writer() -> str:
        # The reader has read the old row; a writer commits and invalidates before the
        # reader stores it.
        gate.invalidate(keys=[("lead", "1")])
        return "old row"

    assert gate.get_or_load("lead", "1", loader_racing_a_writer) == "old row"

    key = value_key(cache_prefix, generation(), "lead", "1")
    assert shared_client.exists(key) == 0
    assert counters("lead") == counts(
        misses=1, stale_stores_refused=1, invalidations=1, redis_calls=3
    )
    fresh = Loader("new row")
    assert gate.get_or_load("lead", "1", fresh) == "new row"
    assert gate.get_or_load("lead", "1", fresh) == "new row"
    assert fresh.calls == 1
    assert pickle.loads(shared_client.get(key)) == "new row"
    assert counters("lead") == counts(
        misses=2, hits=1, stores=1, stale_stores_refused=1, invalidations=1, redis_calls=6
    )


def test_it_refuses_a_group_members_store_after_a_concurrent_group_invalidation(
    shared_client, cache_prefix
):
    def loader_racing_a_writer() -> str:
        gate.invalidate(groups=[("leads", "lists")])
        return "old page"

    assert gate.get_or_load("leads", "page-1", loader_racing_a_writer, group="lists") == "old page"

    gen = generation()
    assert shared_client.exists(value_key(cache_prefix, gen, "leads", "page-1")) == 0
    assert shared_client.exists(f"{cache_prefix}:{gen}:m:leads:lists") == 0
    assert counters("leads") == counts(
        misses=1, stale_stores_refused=1, invalidations=1, redis_calls=3
    )


def test_it_invalidates_entries_of_a_generation_another_process_has_not_seen_yet(shared_redis):
    before = generation()
    lagging = CacheGate()  # another process: a switch copy of its own, refreshed later
    lagging.switch = switch.SwitchView()
    lagging.switch.background = True  # its refresher has not run since it last read the row
    assert lagging.switch.current().generation == before
    switch.bump_generation(actor="alice", reason="flush after an import", source="dashboard")
    loader = Loader("row before the write")
    gate.get_or_load("lead", "1", loader)  # stored under generation before + 1
    assert lagging.switch.current().generation == before  # still the old copy

    lagging.invalidate(keys=[("lead", "1")])  # the other process's write, on commit

    loader.value = "row after the write"
    assert gate.get_or_load("lead", "1", loader) == "row after the write"
    assert loader.calls == 2


# --- generations and the switch -------------------------------------------------------------


def test_it_makes_old_entries_unreachable_on_a_generation_bump(shared_client, cache_prefix):
    before = generation()
    loader = Loader("row")
    gate.get_or_load("lead", "1", loader)

    state = switch.bump_generation(actor="alice", reason="stale data reported", source="system")

    assert state.generation == before + 1
    assert gate.get_or_load("lead", "1", loader) == "row"
    assert loader.calls == 2
    assert shared_client.exists(value_key(cache_prefix, before, "lead", "1")) == 1
    assert shared_client.exists(value_key(cache_prefix, before + 1, "lead", "1")) == 1
    audit = SwitchAudit.objects.get()
    assert (audit.actor, audit.action, audit.source, audit.reason) == (
        "alice",
        "flush",
        "system",
        "stale data reported",
    )
    assert (audit.old_enabled, audit.new_enabled, audit.generation) == (True, True, before + 1)
    assert counters("lead") == counts(misses=2, stores=2, redis_calls=4)


def test_it_bypasses_redis_entirely_while_switched_off(redis_server):
    turn_caching(False)
    gate.invalidate(keys=[("lead", "warm-up")])  # connects and loads the script
    loader = Loader("row")

    sent = commands_sent(
        redis_server, lambda: [gate.get_or_load("lead", "1", loader) for _ in range(3)]
    )

    assert sent == {}
    assert loader.calls == 3
    assert counters("lead") == counts(bypassed=3, invalidations=1, redis_calls=1)


def test_it_still_sends_invalidations_while_switched_off_at_runtime(redis_server):
    turn_caching(False)
    gate.invalidate(keys=[("lead", "warm-up")])  # connects and loads the script

    sent = commands_sent(
        redis_server, lambda: gate.invalidate(keys=[("lead", "1")], groups=[("leads", "lists")])
    )

    assert sent == {"evalsha": 1, "incr": 2, "expire": 2, "smembers": 1, "del": 2}
    assert counters("lead") == counts(invalidations=2, redis_calls=2)
    assert counters("leads") == counts(invalidations=1)


def test_it_sends_nothing_at_all_when_pinned_off_by_the_environment(redis_server):
    loader = Loader("row")

    def use_the_gate() -> None:
        gate.get_or_load("lead", "1", loader)
        gate.get_or_load("lead", "1", loader)
        gate.invalidate(keys=[("lead", "1")], groups=[("leads", "lists")])

    with override_settings(REDIS_ENABLED=False):
        sent = commands_sent(redis_server, use_the_gate)
        snapshot = {namespace: counters(namespace) for namespace in gate.stats.snapshot()}

    assert sent == {}
    assert loader.calls == 2
    assert snapshot == {"lead": counts(bypassed=2)}


# --- Redis stopped, hung, and back ----------------------------------------------------------


@override_settings(REDIS_BREAKER_FAILURES=3, REDIS_BREAKER_COOLDOWN=60)
def test_it_serves_from_the_loader_and_opens_the_breaker_when_redis_is_stopped(redis_server):
    gate.get_or_load("lead", "1", Loader("cached row"))  # a connection in the pool
    redis_server.stop()
    loader = Loader("row")

    assert [gate.get_or_load("lead", "1", loader) for _ in range(2)] == ["row", "row"]
    assert gate.breaker.state == "closed"
    assert gate.get_or_load("lead", "1", loader) == "row"
    assert gate.breaker.state == "open"
    assert [gate.get_or_load("lead", "1", loader) for _ in range(2)] == ["row", "row"]

    assert loader.calls == 5
    assert counters("lead") == counts(misses=1, stores=1, errors=3, bypassed=2, redis_calls=2 + 3)
    assert [(old, new) for _, old, new in gate.stats.breaker_changes] == [("closed", "open")]


@override_settings(REDIS_BREAKER_FAILURES=3, REDIS_BREAKER_COOLDOWN=60)
def test_it_bumps_the_generation_when_an_invalidation_is_lost(redis_server):
    before = generation()
    redis_server.stop()

    gate.invalidate(keys=[("lead", "1")])

    assert gate.breaker.state == "closed"
    assert generation() == before + 1
    assert switch.view.current().generation == before + 1
    audit = SwitchAudit.objects.get()
    assert (audit.actor, audit.action, audit.source, audit.generation) == (
        "system",
        "lost",
        "system",
        before + 1,
    )
    assert audit.reason == "a cache invalidation could not reach Redis"
    assert counters("lead") == counts(errors=1, redis_calls=1)


def test_it_recovers_with_a_generation_bump_once_redis_is_back(redis_server, cache_prefix):
    with override_settings(REDIS_BREAKER_FAILURES=3, REDIS_BREAKER_COOLDOWN=0.2):
        before = generation()
        gate.get_or_load("lead", "1", Loader("row before the outage"))
        redis_server.stop()
        for _ in range(3):
            gate.get_or_load("lead", "1", Loader("row during the outage"))
        assert gate.breaker.state == "open"
        gate.invalidate(keys=[("lead", "1")])  # a write during the outage: skipped, noted
        redis_server.start()  # a new process on the same port, empty
        wait_for_probe_time()
        loader = Loader("row after the outage")

        assert gate.get_or_load("lead", "1", loader) == "row after the outage"

        assert gate.breaker.state == "closed"
        assert generation() == before + 1
        audit = SwitchAudit.objects.get()
        assert (audit.actor, audit.action, audit.source, audit.generation) == (
            "system",
            "skipped",
            "system",
            before + 1,
        )
        assert loader.calls == 1
        key = value_key(cache_prefix, before + 1, "lead", "1")
        assert pickle.loads(redis_server.client().get(key)) == "row after the outage"
        assert gate.get_or_load("lead", "1", loader) == "row after the outage"
        assert loader.calls == 1
        assert [(old, new) for _, old, new in gate.stats.breaker_changes] == [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
        ]
        assert counters("probe") == counts(redis_calls=1)
        assert counters("lead") == counts(
            misses=2, stores=2, hits=1, errors=3, redis_calls=2 + 3 + 3
        )


def test_it_opens_the_breaker_after_repeated_timeouts_when_redis_hangs(redis_server):
    with (
        using_redis(redis_server.url, socket_timeout=0.3),
        override_settings(REDIS_BREAKER_FAILURES=3, REDIS_BREAKER_COOLDOWN=60),
    ):
        redis_server.hang()
        loader = Loader("row")

        for calls in (1, 2):
            assert gate.get_or_load("lead", "1", loader) == "row"
            assert gate.breaker.state == "closed"  # one slow answer is not an outage
            assert counters("lead") == counts(errors=calls, redis_calls=calls)
        assert gate.get_or_load("lead", "1", loader) == "row"
        assert gate.breaker.state == "open"

        assert gate.get_or_load("lead", "1", loader) == "row"
        assert loader.calls == 4
        assert counters("lead") == counts(errors=3, bypassed=1, redis_calls=3)


def test_it_opens_the_breaker_when_redis_hangs_mid_connection(redis_server):
    with (
        using_redis(redis_server.url, socket_timeout=0.3),
        override_settings(REDIS_BREAKER_FAILURES=3, REDIS_BREAKER_COOLDOWN=60),
    ):
        gate.get_or_load("lead", "1", Loader("cached row"))  # a connection in the pool
        redis_server.hang()
        loader = Loader("row")

        for _ in range(3):
            assert gate.get_or_load("lead", "1", loader) == "row"
        assert gate.breaker.state == "open"
        assert gate.get_or_load("lead", "1", loader) == "row"
        assert loader.calls == 4
        assert counters("lead") == counts(
            misses=1, stores=1, errors=3, bypassed=1, redis_calls=2 + 3
        )
