"""Recording answered calls in batches: known and new callers alike in a fixed number of
statements whatever the batch's size and mix, with every effect of the one-by-one path (the
lead, the delivery row, the conversation, the caller's context invalidated, live events after
commit), and the one-by-one path again when a batch fails."""

import pytest
from django.db import DatabaseError, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from leads import services
from leads.models import Conversation, Lead, WebhookEvent
from leads.webhooks import initiation_records
from leads.webhooks.initiation_records import Call, record_initiations
from monitoring import events
from tests.conftest import turn_caching
from tests.factories import ORG_NUMBER, T0, make_org

pytestmark = pytest.mark.django_db(transaction=True)

# One batch, known and new callers alike: the new callers' leads (INSERT ... ON CONFLICT DO
# NOTHING), every lead of the batch (one SELECT), the deliveries seen before (SELECT), the
# delivery rows and the conversations (two INSERT ... ON CONFLICT DO NOTHING).
WITH_NEW_CALLERS = 5
KNOWN_ONLY = 4  # no new lead to insert
# After the commit: the invalidation reads the cache generation; with new leads, their callers'
# entries are re-warmed as for any lead created (the organizations' numbers in one SELECT, then
# only the entries in use are loaded again: none here).
AFTER_COMMIT = {
    WITH_NEW_CALLERS: ["monitoring_cacheswitch", "leads_phonenumber"],
    KNOWN_ONLY: ["monitoring_cacheswitch"],
}


def caller(n: int) -> str:
    return f"+1555123{n:04d}"


def new_call(org, n: int, answer: str | None = None) -> Call:
    return Call(org.id, caller(n), None, {"call_sid": f"CA{n}"}, T0, answer or f"answer-{n}")


def known_call(org, n: int) -> Call:
    lead, _ = services.find_or_create_lead(org.id, caller(n))
    return Call(org.id, caller(n), lead["id"], {"call_sid": f"CA{n}"}, T0, f"answer-{n}")


def statements(calls) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        record_initiations(calls)
    return [query["sql"] for query in captured.captured_queries]


@pytest.fixture
def org(shared_redis, postgres):
    """Statement counts are asserted on PostgreSQL."""
    # A refresh interval longer than any test: the switch is never re-read inside a count.
    with override_settings(SWITCH_REFRESH_SECONDS=3600):
        turn_caching(True)
        org = make_org()
        services.call_context(ORG_NUMBER, "+15559990000")  # the switch read, once
        yield org


@pytest.mark.parametrize(
    ("new", "known", "expected"),
    [(1, 0, WITH_NEW_CALLERS), (10, 0, WITH_NEW_CALLERS), (0, 1, KNOWN_ONLY)]
    + [(0, 10, KNOWN_ONLY), (5, 5, WITH_NEW_CALLERS), (1, 9, WITH_NEW_CALLERS)],
)
def test_it_records_a_batch_in_a_fixed_number_of_statements(org, new, known, expected):
    calls = [known_call(org, n) for n in range(known)]
    calls += [new_call(org, n) for n in range(known, known + new)]
    sql = statements(calls)
    assert [s.split()[0] for s in sql] == [
        "BEGIN",
        *["INSERT"] * (expected == WITH_NEW_CALLERS),
        "SELECT",
        "SELECT",
        "INSERT",
        "INSERT",
        "COMMIT",
        *["SELECT"] * len(AFTER_COMMIT[expected]),
    ]
    tables = [s.split('"')[1] if '"' in s else "" for s in sql[1:]]
    assert tables == ["leads_lead"] * (expected - 3) + [
        "leads_webhookevent",
        "leads_webhookevent",
        "leads_conversation",
        "",  # COMMIT
        *AFTER_COMMIT[expected],
    ]
    assert Lead.objects.count() == new + known
    assert Conversation.objects.filter(status="initiated", channel="voice").count() == new + known
    assert WebhookEvent.objects.filter(status="processed").count() == new + known


def test_it_records_a_new_caller_as_the_one_by_one_path_did(org):
    before = services.call_context(ORG_NUMBER, caller(1))  # cached: "no lead" for this caller
    assert before["lead"] is None
    published = []
    original = events.publish
    events.publish = lambda kind, payload: published.append((kind, payload))
    try:
        record_initiations([new_call(org, 1)])
    finally:
        events.publish = original
    lead = Lead.objects.get()
    assert (lead.organization_id, lead.phone, lead.status, lead.name) == (
        org.id,
        caller(1),
        "new",
        "",
    )
    assert (lead.interest, lead.qualification, lead.sentiment) == ({}, {}, "")
    call = Conversation.objects.get()
    assert (call.lead_id, call.call_sid, call.status, call.started_at) == (
        lead.id,
        "CA1",
        "initiated",
        T0,
    )
    event = WebhookEvent.objects.get()
    assert (event.idempotency_key, event.status, event.attempts, event.duplicates) == (
        "conversation_initiation:CA1",
        "processed",
        1,
        0,
    )
    assert event.payload["opsdash"] == {
        "organization_id": org.id,
        "customer": caller(1),
        "lead_id": None,
        "started_at": T0.isoformat(),
        "answer": "answer-1",
    }
    # The caller's context was invalidated: the next read finds the new lead.
    assert services.call_context(ORG_NUMBER, caller(1))["lead"]["id"] == lead.id
    assert published == [("call.updated", {"lead_id": lead.id})]


def test_it_records_two_calls_of_one_new_caller_under_one_lead(org):
    first, second = new_call(org, 1), new_call(org, 1)._replace(payload={"call_sid": "CA2"})
    record_initiations([first, second])
    lead = Lead.objects.get()
    assert sorted(Conversation.objects.values_list("call_sid", "lead_id")) == [
        ("CA1", lead.id),
        ("CA2", lead.id),
    ]


def test_it_counts_a_repeat_from_the_provider_but_not_a_replayed_record(org):
    record_initiations([new_call(org, 1)])
    record_initiations([new_call(org, 1)])  # the same answer's record, replayed
    assert WebhookEvent.objects.get().duplicates == 0
    record_initiations([new_call(org, 1, answer="another answer")])  # the provider sent it again
    assert WebhookEvent.objects.get().duplicates == 1
    assert (Lead.objects.count(), Conversation.objects.count()) == (1, 1)


def test_it_records_one_by_one_when_the_batch_fails(org, monkeypatch):
    def broken(resolved):
        raise DatabaseError("the batch failed")

    monkeypatch.setattr(initiation_records, "_record_deliveries", broken)
    record_initiations([new_call(org, 1), known_call(org, 2)])
    assert sorted(Conversation.objects.values_list("call_sid", flat=True)) == ["CA1", "CA2"]
    assert sorted(Lead.objects.values_list("phone", flat=True)) == [caller(1), caller(2)]
    assert WebhookEvent.objects.filter(status="processed").count() == 2


def test_it_records_a_call_without_a_call_sid_once_when_its_record_is_replayed(org):
    call = new_call(org, 1)._replace(payload={})
    record_initiations([call])
    record_initiations([call])
    assert Conversation.objects.get().call_sid is None
    assert WebhookEvent.objects.get().idempotency_key == "conversation_initiation:answer-1"
