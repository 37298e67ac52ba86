"""Exact costs: SQL queries (assertNumQueries) and Redis commands (the server's own
INFO commandstats on a private redis-server, so nothing else is counted)."""

import pytest
from django.test import override_settings

from leads import services
from monitoring.cache import gate
from tests.conftest import turn_caching
from tests.factories import CALLER, ORG_NUMBER, at, make_org

pytestmark = pytest.mark.django_db(transaction=True)

# Queries of a cold call context for a known caller: organization, lead, messages,
# conversation count and last start, latest summary.
COLD_CONTEXT_QUERIES = 5


@pytest.fixture
def caller(redis_server):
    # A refresh interval longer than any test, so the switch is never re-read inside a count.
    with override_settings(SWITCH_REFRESH_SECONDS=3600):
        turn_caching(True)
        org = make_org()
        lead, _ = services.find_or_create_lead(org.id, CALLER)
        call = services.open_conversation(lead["id"], "voice", started_at=at(0))
        for n in range(12):
            services.add_message(call.id, "customer", f"message {n}", created_at=at(n))
        services.complete_conversation(call.id, ended_at=at(20), summary="Wants a cargo bike.")
        # Load the Lua scripts once, so counts below are of steady-state commands.
        services.call_context(ORG_NUMBER, "+15559990000")
        yield lead


# Redis counts the commands a Lua script runs as well; these run only inside the gate's scripts.
SCRIPT_INTERNAL = {"get", "set", "sadd", "ttl", "expire", "incr", "del", "smembers"}


def round_trips(commands: dict[str, int]) -> dict[str, int]:
    return {name: n for name, n in commands.items() if name not in SCRIPT_INTERNAL}


def commands_during(server, action) -> dict[str, int]:
    before = server.command_calls()
    action()
    after = server.command_calls()
    return {
        name: after[name] - before.get(name, 0)
        for name in after
        if after[name] != before.get(name, 0)
    }


def test_it_reads_a_warm_call_context_with_no_sql_and_one_redis_command(
    caller, redis_server, django_assert_num_queries
):
    services.call_context(ORG_NUMBER, CALLER)
    with django_assert_num_queries(0):
        commands = commands_during(redis_server, lambda: services.call_context(ORG_NUMBER, CALLER))
    assert commands == {"mget": 1}


def test_it_reads_a_cold_call_context_with_a_fixed_number_of_queries(
    caller, redis_server, django_assert_num_queries
):
    with django_assert_num_queries(COLD_CONTEXT_QUERIES):
        commands = commands_during(redis_server, lambda: services.call_context(ORG_NUMBER, CALLER))
    # Two round trips: the lookup (entry, marker, the scopes' tokens: earlier writes created
    # them), and the guarded store (in Lua: the marker and two tokens compared, one SET).
    assert commands == {"mget": 1, "evalsha": 1, "get": 3, "set": 1}


def test_it_reads_an_unknown_callers_context_with_two_queries(
    caller, redis_server, django_assert_num_queries
):
    with django_assert_num_queries(2):
        services.call_context(ORG_NUMBER, "+15559990001")


def test_it_invalidates_a_write_in_one_redis_command(caller, redis_server):
    call_id = services.open_conversation(caller["id"], "sms", started_at=at(30)).id
    gate.flush(actor="test", reason="nothing cached: count the invalidation alone", source="system")
    commands = commands_during(
        redis_server, lambda: services.add_message(call_id, "customer", "hi", created_at=at(31))
    )
    # One invalidation; then the re-warm looks for the lead lookup and the context, finds
    # neither in use (nothing cached since the flush) and stores nothing.
    assert round_trips(commands) == {"evalsha": 1, "mget": 2}
    # Inside it, four tokens replaced: the caller's phone (lead lookup, contexts), the lead's
    # page, every lead list, every counter.
    assert commands["set"] == 4


def test_it_refreshes_the_lead_lookup_a_write_dropped(caller, redis_server):
    call_id = services.open_conversation(caller["id"], "sms", started_at=at(30)).id
    services.find_or_create_lead(caller["organization_id"], CALLER)  # cached
    commands = commands_during(
        redis_server, lambda: services.add_message(call_id, "customer", "hi", created_at=at(31))
    )
    # The invalidation, then the re-warm: the lead lookup (in use) read and stored again, the
    # context (not in use) only looked at.
    assert round_trips(commands) == {"evalsha": 2, "mget": 2}
    assert gate.stats.snapshot()["lead"]["refreshes"] >= 1
    hits = gate.stats.snapshot()["lead"]["hits"]
    services.find_or_create_lead(caller["organization_id"], CALLER)
    assert gate.stats.snapshot()["lead"]["hits"] == hits + 1


def test_it_sends_nothing_to_redis_while_switched_off(
    caller, redis_server, django_assert_num_queries
):
    turn_caching(False)
    with django_assert_num_queries(COLD_CONTEXT_QUERIES):
        commands = commands_during(redis_server, lambda: services.call_context(ORG_NUMBER, CALLER))
    assert commands == {}


def test_it_sends_nothing_to_redis_when_the_environment_pins_caching_off(caller, redis_server):
    with override_settings(REDIS_ENABLED=False, SWITCH_REFRESH_SECONDS=3600):
        assert gate.switch.current().enabled is False
        commands = commands_during(
            redis_server,
            lambda: (
                services.call_context(ORG_NUMBER, CALLER),
                services.update_lead(caller["id"], name="Pinned"),
            ),
        )
    assert commands == {}


def test_it_sends_nothing_to_redis_while_the_breaker_is_open(
    caller, redis_server, django_assert_num_queries
):
    gate.breaker.record_failure(hard=True)
    with django_assert_num_queries(COLD_CONTEXT_QUERIES):
        commands = commands_during(redis_server, lambda: services.call_context(ORG_NUMBER, CALLER))
    assert commands == {}
    assert gate.stats.snapshot()["ctx"]["bypassed"] == 1


def test_it_keeps_a_callers_context_warm_across_a_write(
    caller, redis_server, django_assert_num_queries
):
    services.call_context(ORG_NUMBER, CALLER)
    thread = services.open_conversation(caller["id"], "sms", started_at=at(40))
    commands = commands_during(
        redis_server, lambda: services.add_message(thread.id, "customer", "new", created_at=at(41))
    )
    # The invalidation, then the re-warm of the two hot entries it made stale (the call context
    # and the lead lookup): for each one read and one guarded store.
    assert round_trips(commands) == {"evalsha": 3, "mget": 2}
    with django_assert_num_queries(0):
        context = services.call_context(ORG_NUMBER, CALLER)
    assert context["recent_messages"][-1]["body"] == "new"
    assert gate.stats.snapshot()["ctx"]["refreshes"] == 2


def test_it_keeps_the_context_warm_when_a_known_caller_calls_again(
    caller, redis_server, django_assert_num_queries
):
    from leads.services import calls

    services.call_context(ORG_NUMBER, CALLER)
    commands = commands_during(
        redis_server,
        lambda: calls.open_call(caller["organization_id"], CALLER, "CA42", at(50), caller["id"]),
    )
    # Only the lead's page is dropped: a call in progress is not in the call context.
    assert round_trips(commands) == {"evalsha": 1}
    assert commands["set"] == 1
    with django_assert_num_queries(0):
        services.call_context(ORG_NUMBER, CALLER)


def test_it_invalidates_a_lead_once_per_transaction(caller, redis_server):
    from django.db import transaction

    thread_id = services.open_conversation(caller["id"], "sms", started_at=at(60)).id
    gate.flush(actor="test", reason="nothing cached: count the invalidation alone", source="system")

    def text_and_auto_reply():
        with transaction.atomic():
            services.add_message(thread_id, "customer", "in stock?", created_at=at(61))
            services.add_message(thread_id, "agent", "Yes!", created_at=at(62))

    commands = commands_during(redis_server, text_and_auto_reply)
    # One invalidation for both writes (and one look for the caller's entries to re-warm).
    assert round_trips(commands) == {"evalsha": 1, "mget": 2}
