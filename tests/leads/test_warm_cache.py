"""`manage.py warm_cache`: the hottest leads' call contexts (most recently contacted first, for
every number of their organization) are warm afterwards, i.e. read with no SQL at all; --limit
is respected; nothing is warmed when caching is off or Redis is unreachable."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper
from django.test import override_settings

from leads import services
from leads.management.commands import warm_cache as warm_cache_command
from leads.management.progress import Progress
from tests.conftest import turn_caching, using_redis
from tests.factories import ORG_NUMBER, at, make_org
from tests.redis_servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

SECOND_NUMBER = "+15550000002"
# A cold call context of a known caller: organization, lead, messages, counts, summary.
COLD_CONTEXT_QUERIES = 5


@pytest.fixture
def caching(shared_redis):
    # The switch is not re-read inside a counted block.
    with override_settings(SWITCH_REFRESH_SECONDS=3600):
        turn_caching(True)
        yield


def make_leads(count: int, *numbers: str) -> list[str]:
    """`count` leads with a message each; lead n was last contacted at minute n (the last one
    is the hottest). Returns their phones, coldest first."""
    org = make_org("Pedal Bikes", ORG_NUMBER, *numbers)
    phones = []
    for n in range(count):
        phone = f"+1555123{n:04d}"
        lead, _ = services.find_or_create_lead(org.id, phone)
        call = services.open_conversation(lead["id"], "sms", started_at=at(n))
        services.add_message(call.id, "customer", f"hello {n}", created_at=at(n))
        phones.append(phone)
    return phones


def warm_cache(*args: str) -> tuple[list[str], list[str]]:
    out, err = StringIO(), StringIO()
    call_command("warm_cache", *args, stdout=out, stderr=err)
    return out.getvalue().splitlines(), err.getvalue().splitlines()


def summary(lines: list[str]) -> str:
    assert len(lines) == 1
    return re.sub(r"in \d+\.\d s", "in T s", lines[0])


def queries_of(phone: str, number: str, django_assert_num_queries, expected: int) -> None:
    with django_assert_num_queries(expected):
        services.call_context(number, phone)


def test_it_warms_every_call_context_so_the_next_read_runs_no_sql(
    caching, django_assert_num_queries
):
    phones = make_leads(5)
    out, _ = warm_cache()
    assert summary(out) == (
        "warmed the call contexts of 5 leads in T s: loaded 5, already warm 0, skipped 0"
    )
    for phone in phones:
        queries_of(phone, ORG_NUMBER, django_assert_num_queries, 0)


def test_it_warms_the_context_of_every_number_of_the_organization(
    caching, django_assert_num_queries
):
    phones = make_leads(3, SECOND_NUMBER)
    out, _ = warm_cache()
    assert summary(out) == (
        "warmed the call contexts of 3 leads in T s: loaded 6, already warm 0, skipped 0"
    )
    for phone in phones:
        for number in (ORG_NUMBER, SECOND_NUMBER):
            queries_of(phone, number, django_assert_num_queries, 0)


def test_it_counts_contexts_already_warm(caching):
    phones = make_leads(4)
    services.call_context(ORG_NUMBER, phones[-1])
    out, _ = warm_cache()
    assert summary(out) == (
        "warmed the call contexts of 4 leads in T s: loaded 3, already warm 1, skipped 0"
    )
    out, _ = warm_cache()
    assert summary(out) == (
        "warmed the call contexts of 4 leads in T s: loaded 0, already warm 4, skipped 0"
    )


def test_it_warms_only_the_most_recently_contacted_up_to_the_limit(
    caching, django_assert_num_queries
):
    phones = make_leads(5)
    out, _ = warm_cache("--limit", "2")
    assert summary(out) == (
        "warmed the call contexts of 2 leads in T s: loaded 2, already warm 0, skipped 0"
    )
    for phone in phones[3:]:
        queries_of(phone, ORG_NUMBER, django_assert_num_queries, 0)
    for phone in phones[:3]:
        queries_of(phone, ORG_NUMBER, django_assert_num_queries, COLD_CONTEXT_QUERIES)


def test_it_puts_leads_never_contacted_last(caching, django_assert_num_queries):
    phones = make_leads(2)
    org_id = services.organization_for_number(ORG_NUMBER)["id"]
    services.find_or_create_lead(org_id, "+15559990000")  # never contacted
    warm_cache("--limit", "2")
    for phone in phones:
        queries_of(phone, ORG_NUMBER, django_assert_num_queries, 0)


def test_it_shows_progress_on_stderr_every_tenth(caching):
    make_leads(5)
    _, err = warm_cache()
    assert err == [
        "[##........] 1/5",
        "[####......] 2/5",
        "[######....] 3/5",
        "[########..] 4/5",
        "[##########] 5/5",
    ]


def test_it_redraws_the_progress_bar_in_place_on_a_terminal():
    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = Progress(4, OutputWrapper(terminal))
    for _ in range(4):
        progress.advance()
    progress.finish()
    assert terminal.getvalue() == (
        "\r[##........] 1/4\r[#####.....] 2/4\r[#######...] 3/4\r[##########] 4/4\n"
    )


def test_it_refuses_when_caching_is_switched_off(caching):
    make_leads(1)
    turn_caching(False)
    with pytest.raises(CommandError) as excinfo:
        warm_cache()
    assert str(excinfo.value) == (
        "nothing to warm: caching is switched off (`manage.py redis_switch on` turns it on)"
    )


def test_it_refuses_when_caching_is_pinned_off(caching):
    with override_settings(REDIS_ENABLED=False), pytest.raises(CommandError) as excinfo:
        warm_cache()
    assert str(excinfo.value) == (
        "nothing to warm: caching is pinned off by the environment (REDIS_ENABLED=false)"
    )


def test_it_refuses_without_redis_configured():
    with override_settings(REDIS_URL=None), pytest.raises(CommandError) as excinfo:
        warm_cache()
    assert str(excinfo.value) == ("nothing to warm: no Redis is configured (REDIS_URL is not set)")


def test_it_refuses_when_redis_is_unreachable():
    port = free_port()
    with using_redis(f"redis://127.0.0.1:{port}/0"), pytest.raises(CommandError) as excinfo:
        warm_cache()
    assert str(excinfo.value) == (
        f"nothing to warm: Redis is unreachable (ConnectionError: Error 111 connecting to "
        f"127.0.0.1:{port}. Connection refused.)"
    )


@override_settings(REDIS_BREAKER_FAILURES=3)
def test_it_stops_when_redis_goes_away_during_the_run(redis_server, monkeypatch):
    turn_caching(True)
    make_leads(5)
    leads_of = warm_cache_command.hottest_leads

    def redis_stops_once_the_leads_are_read(limit):
        leads = leads_of(limit)
        redis_server.stop()
        return leads

    monkeypatch.setattr(warm_cache_command, "hottest_leads", redis_stops_once_the_leads_are_read)
    with pytest.raises(CommandError) as excinfo:
        warm_cache()
    # Refused connections are soft faults: the breaker opens at the third.
    assert str(excinfo.value) == (
        "Redis became unreachable at lead 3 of 5 (loaded 0); run again once it is back"
    )


def test_it_refuses_a_limit_below_one():
    with pytest.raises(CommandError, match=r"^--limit must be at least 1$"):
        warm_cache("--limit", "0")
