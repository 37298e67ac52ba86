"""The cache gate's invalidation against real Redis: by key and by scope in one round trip, the
read-populate race guard, generation bumps, and stores deferred to the commit."""

import msgspec
import pytest
from django.db import transaction

from monitoring.cache import Namespace, gate
from tests.monitoring.gate_support import (
    LEAD,
    Loader,
    commands_sent,
    counters,
    generation,
    value_key,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
