"""The cache gate when it may not or cannot use Redis: switched off at runtime or pinned off by
the environment, Redis stopped, hung and back again (the breaker, the generation bump), and
a slow name resolver. Redis commands are counted by the server (INFO commandstats)."""

import time

import msgspec
import pytest
from django.test import override_settings

from monitoring.cache import Namespace, entries, gate, switch
from monitoring.cache.gate import CacheGate
from monitoring.models import SwitchAudit
from tests.conftest import turn_caching, using_redis
from tests.monitoring.gate_support import (
    LEAD,
    Loader,
    commands_sent,
    counters,
    counts,
    generation,
    value_key,
    wait_for_probe_time,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
