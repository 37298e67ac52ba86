"""The cache gate's reads against real Redis: hits and misses, in one round trip, entries as
plain data (never pickle) under their shape's version, a corrupt entry as a miss. Keys are read
straight from Redis where that proves the point."""

from datetime import UTC, datetime

import msgspec
import pytest

from monitoring.cache import Namespace, gate
from tests.monitoring.gate_support import (
    LEAD,
    Loader,
    commands_sent,
    counters,
    counts,
    generation,
    value_key,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
