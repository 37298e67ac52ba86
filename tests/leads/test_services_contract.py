"""One contract for the lead services, run in every cache mode: caching on, switched off,
Redis stopped and Redis hung. The answers must be the same in each, and nothing may escape."""

import time

import pytest

from leads import services
from leads.models import Conversation, Lead, Message, Organization
from monitoring.cache import gate
from tests.factories import CALLER, ORG_NUMBER, at, make_org
from tests.leads.cache_modes import HUNG_SOCKET_TIMEOUT, MODES, cache_mode

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=MODES)
def mode(request, shared_redis):
    with cache_mode(request.param, shared_redis):
        yield request.param


def caller_with_history(org: Organization) -> dict:
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    services.update_lead(lead["id"], name="Dana", status=Lead.Status.QUALIFIED)
    call = services.open_conversation(lead["id"], "voice", provider_id="conv-1", started_at=at(0))
    services.add_message(call.id, "customer", "Do you have e-bikes?", created_at=at(1))
    services.add_message(call.id, "agent", "Yes, three models.", created_at=at(2))
    services.complete_conversation(
        call.id, ended_at=at(5), summary="Asked about e-bikes.", title="E-bike question"
    )
    return lead


def test_it_finds_or_creates_one_lead_per_phone(mode):
    org = make_org()
    first, created = services.find_or_create_lead(org.id, "(555) 123-0001")
    again, created_again = services.find_or_create_lead(org.id, "+1 555 123 0001")
    assert (created, created_again) == (True, False)
    assert again["id"] == first["id"]
    assert first["phone"] == CALLER
    assert Lead.objects.count() == 1


def test_it_answers_an_unknown_caller_with_the_organization_only(mode):
    org = make_org()
    context = services.call_context(ORG_NUMBER, CALLER)
    assert context["organization"]["id"] == org.id
    assert context["organization"]["timezone"] == "America/New_York"
    assert context["lead"] is None
    assert context["recent_messages"] == []
    assert context["conversation_count"] == 0


def test_it_answers_an_unknown_number_with_no_organization(mode):
    make_org()
    context = services.call_context("+15559999999", CALLER)
    assert context["organization"] is None and context["lead"] is None
    assert services.organization_for_number("+15559999999") is None


def test_it_bundles_the_call_context(mode):
    org = make_org()
    lead = caller_with_history(org)
    context = services.call_context(ORG_NUMBER, CALLER)
    assert context["lead"]["id"] == lead["id"]
    assert context["lead"]["name"] == "Dana"
    assert context["lead"]["status"] == "qualified"
    assert [(m["role"], m["body"]) for m in context["recent_messages"]] == [
        ("customer", "Do you have e-bikes?"),
        ("agent", "Yes, three models."),
    ]
    assert context["latest_summary"] == "Asked about e-bikes."
    assert context["latest_title"] == "E-bike question"
    assert context["conversation_count"] == 1
    assert context["last_conversation_at"] == at(0)


def test_it_shows_a_new_message_in_the_next_context_read(mode):
    org = make_org()
    lead = caller_with_history(org)
    services.call_context(ORG_NUMBER, CALLER)
    sms = services.open_conversation(lead["id"], "sms", started_at=at(10))
    services.add_message(sms.id, "customer", "Is the blue one in stock?", created_at=at(11))
    context = services.call_context(ORG_NUMBER, CALLER)
    assert context["recent_messages"][-1]["body"] == "Is the blue one in stock?"
    assert context["recent_messages"][-1]["channel"] == "sms"
    assert context["conversation_count"] == 2
    assert context["lead"]["last_contact_at"] == at(11)


def test_it_keeps_only_the_last_messages(mode, settings):
    settings.CALL_CONTEXT_MESSAGES = 3
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    sms = services.open_conversation(lead["id"], "sms", started_at=at(0))
    for n in range(5):
        services.add_message(sms.id, "customer", f"message {n}", created_at=at(n + 1))
    bodies = [m["body"] for m in services.call_context(ORG_NUMBER, CALLER)["recent_messages"]]
    assert bodies == ["message 2", "message 3", "message 4"]


def test_it_shows_a_lead_update_in_every_read(mode):
    org = make_org()
    lead = caller_with_history(org)
    services.call_context(ORG_NUMBER, CALLER)
    services.lead_counts()
    services.lead_list(search="Dana")
    services.update_lead(lead["id"], name="Dana Scully", status=Lead.Status.HOT)
    assert services.call_context(ORG_NUMBER, CALLER)["lead"]["name"] == "Dana Scully"
    assert services.lead_counts()["hot"] == 1
    assert services.lead_counts()["qualified"] == 0
    assert services.lead_list(search="Scully")["total"] == 1
    assert services.find_or_create_lead(org.id, CALLER)[0]["status"] == "hot"


def test_it_refreshes_every_list_variant_after_a_write(mode):
    org = make_org()
    for n in range(3):
        lead, _ = services.find_or_create_lead(org.id, f"+1555123000{n + 1}")
        services.update_lead(lead["id"], name=f"Lead {n}", last_contact_at=at(n))
    variants = [
        {},
        {"organization_id": org.id},
        {"status": "new"},
        {"search": "Lead"},
        {"search": "5551230003"},
        {"page": 2, "per_page": 2},
        {"organization_id": org.id, "status": "new", "search": "Lead 1"},
    ]
    before = [services.lead_list(**v) for v in variants]
    assert [b["total"] for b in before] == [3, 3, 3, 3, 1, 3, 1]
    assert [r["name"] for r in before[0]["results"]] == ["Lead 2", "Lead 1", "Lead 0"]
    newest, _ = services.find_or_create_lead(org.id, "+15551230009")
    services.update_lead(newest["id"], name="Lead 9", last_contact_at=at(30))
    after = [services.lead_list(**v) for v in variants]
    assert [a["total"] for a in after] == [4, 4, 4, 4, 1, 4, 1]
    assert after[0]["results"][0]["name"] == "Lead 9"
    assert [r["name"] for r in after[5]["results"]] == ["Lead 1", "Lead 0"]
    assert services.lead_counts(org.id)["total"] == 4


def test_it_counts_leads_by_status(mode):
    org = make_org()
    for n, status in enumerate(["new", "hot", "hot", "lost"]):
        lead, _ = services.find_or_create_lead(org.id, f"+1555123000{n + 1}")
        services.update_lead(lead["id"], status=status)
    counts = services.lead_counts(org.id)
    assert counts == {
        "new": 1,
        "contacted": 0,
        "qualified": 0,
        "hot": 2,
        "customer": 0,
        "lost": 1,
        "total": 4,
    }


def test_it_completes_a_conversation_with_its_duration(mode):
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    call = services.open_conversation(lead["id"], "voice", provider_id="conv-9", started_at=at(0))
    done = services.complete_conversation(call.id, ended_at=at(3), summary="Booked a test ride.")
    stored = Conversation.objects.get(pk=call.id)
    assert (done.status, stored.status, stored.duration_seconds) == ("completed", "completed", 180)
    assert services.call_context(ORG_NUMBER, CALLER)["latest_summary"] == "Booked a test ride."


def test_it_rejects_unknown_fields_without_writing(mode):
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    with pytest.raises(TypeError):
        services.update_lead(lead["id"], phone="+15550000000")
    assert Lead.objects.get(pk=lead["id"]).phone == CALLER
    assert Message.objects.count() == 0


def run_scenario() -> list:
    """A fixed sequence of reads and writes; ids replaced by labels so runs compare."""
    org = make_org()
    lead = caller_with_history(org)
    answers = [services.call_context(ORG_NUMBER, CALLER), services.lead_counts()]
    services.update_lead(lead["id"], status="hot", interest={"model": "City E2"})
    answers += [
        services.call_context(ORG_NUMBER, CALLER),
        services.lead_list(search="Dana"),
        services.find_or_create_lead(org.id, CALLER),
        services.organization_for_number(ORG_NUMBER),
    ]
    return strip_volatile(answers)


def strip_volatile(value):
    if isinstance(value, dict):
        return {
            k: strip_volatile(v)
            for k, v in value.items()
            if k not in {"id", "organization_id", "conversation_id", "created_at", "updated_at"}
        }
    if isinstance(value, list | tuple):
        return [strip_volatile(v) for v in value]
    return value


def test_it_gives_identical_answers_in_every_mode(shared_redis):
    transcripts = {}
    for name in MODES:
        with cache_mode(name, shared_redis):
            transcripts[name] = run_scenario()
        Organization.objects.all().delete()
        gate.reset()
    assert transcripts["off"] == transcripts["on"]
    assert transcripts["stopped"] == transcripts["on"]
    assert transcripts["hung"] == transcripts["on"]
    assert transcripts["evicting"] == transcripts["on"]


def test_it_never_waits_past_the_socket_timeout_when_redis_hangs(shared_redis):
    """Timing is this contract's subject, so it is measured here, with a generous margin."""
    org = make_org()
    lead = caller_with_history(org)
    with cache_mode("hung", shared_redis):
        timings, after_open = [], []
        for _ in range(4):
            # A read waits for one socket timeout at most; a write's invalidation is sent
            # twice before it is given up (one stall of a busy server must not cost every
            # process its cache), so a write waits for two at most.
            for timeouts, call in (
                (1, lambda: services.call_context(ORG_NUMBER, CALLER)),
                (2, lambda: services.update_lead(lead["id"], sentiment="positive")),
            ):
                opened = gate.breaker.state == "open"
                started = time.perf_counter()
                call()
                elapsed = time.perf_counter() - started
                (after_open if opened else timings).append((timeouts, elapsed))
        assert gate.breaker.state == "open"
        # Until the breaker opens each call waits at most its socket timeouts ...
        assert timings and all(t < n * HUNG_SOCKET_TIMEOUT + 0.4 for n, t in timings), timings
        after_open = [t for _, t in after_open]
        # ... and once it is open, none waits at all.
        assert after_open and all(t < HUNG_SOCKET_TIMEOUT for t in after_open), after_open
