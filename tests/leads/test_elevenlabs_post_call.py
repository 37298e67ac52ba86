"""The ElevenLabs post-call webhook's transcription: stored once, acted on once, never a step
back for a lead, matched to the call it completes, and seen in the next cached context."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from leads import services
from leads.models import Conversation, Lead, Message, WebhookEvent
from monitoring.cache import gate
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.post_call_support import (
    CALL_SID,
    CONVERSATION_ID,
    EXPECTED_MESSAGES,
    STARTED,
    SUMMARY,
    collected,
    count,
    deliver,
    initiate,
    messages,
    recorded,
    transcription,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("post_call_settings", "caching_on"),
]


# --- transcription ------------------------------------------------------------------------


def test_it_stores_a_transcription():
    org = make_org()
    envelope = recorded("post_call_transcription.json")
    response = deliver(envelope)
    event = WebhookEvent.objects.get()
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "processed", "event": event.pk}
    assert messages() == EXPECTED_MESSAGES
    call = Conversation.objects.get()
    lead = Lead.objects.get()
    assert set(Message.objects.values_list("conversation_id", "lead_id")) == {(call.id, lead.id)}
    analysis = envelope["data"]["analysis"]
    assert {
        "lead": call.lead_id,
        "channel": call.channel,
        "status": call.status,
        "provider_id": call.provider_id,
        "call_sid": call.call_sid,
        "started_at": call.started_at,
        "ended_at": call.ended_at,
        "duration_seconds": call.duration_seconds,
        "title": call.title,
        "summary": call.summary,
        "classification": call.classification,
        "analysis": call.analysis,
    } == {
        "lead": lead.id,
        "channel": "voice",
        "status": "completed",
        "provider_id": CONVERSATION_ID,
        "call_sid": CALL_SID,
        "started_at": STARTED,
        "ended_at": STARTED + timedelta(seconds=94),
        "duration_seconds": 94,
        "title": "City E2 test ride booked",
        "summary": SUMMARY,
        "classification": "success",
        "analysis": {
            **analysis,
            "termination_reason": "end_call tool was called.",
            "status": "done",
        },
    }
    assert {
        "organization": lead.organization_id,
        "phone": lead.phone,
        "name": lead.name,
        "status": lead.status,
        "interest": lead.interest,
        "qualification": lead.qualification,
        "sentiment": lead.sentiment,
        "last_contact_at": lead.last_contact_at,
    } == {
        "organization": org.id,
        "phone": CALLER,
        "name": "Dana Scully",
        "status": "hot",
        "interest": {"bike_interest": "City E2 e-bike"},
        "qualification": {"budget": 2000, "test_ride": "Saturday 10:00"},
        "sentiment": "positive",
        "last_contact_at": STARTED + timedelta(seconds=94),
    }
    assert (event.provider, event.event_type, event.idempotency_key) == (
        "elevenlabs",
        "post_call_transcription",
        f"post_call_transcription:{CONVERSATION_ID}",
    )
    assert (event.status, event.error, event.attempts, event.duplicates) == ("processed", "", 1, 0)
    assert event.payload == envelope


def test_it_answers_a_repeated_delivery_as_a_duplicate_and_changes_nothing():
    make_org()
    body = json.dumps(recorded("post_call_transcription.json")).encode()
    first = deliver(body=body)
    lead_before = Lead.objects.values().get()
    call_before = Conversation.objects.values().get()
    duplicates = count("webhook.elevenlabs.duplicate")
    again = deliver(body=body)  # the provider's retry, signed again
    event = WebhookEvent.objects.get()
    assert first.json() == {"status": "processed", "event": event.pk}
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event": event.pk}
    assert messages() == EXPECTED_MESSAGES
    assert Lead.objects.values().get() == lead_before
    assert Conversation.objects.values().get() == call_before
    assert (event.status, event.attempts, event.duplicates) == ("processed", 1, 1)
    assert count("webhook.elevenlabs.duplicate") == duplicates + 1


@pytest.mark.parametrize("proposed", ["contacted", "new", "qualified", "lost"])
def test_it_never_downgrades_a_lead_nor_forgets_what_is_known(proposed):
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    services.update_lead(
        lead["id"],
        name="Dana Scully",
        status=Lead.Status.HOT,
        interest={"bike_interest": "Cargo bike"},
        qualification={"budget": 3000},
        sentiment="positive",
    )
    # A later, shorter call that collected less: no name, no interest, a lower status.
    envelope = collected(
        transcription(),
        customer_name=None,
        bike_interest="",
        budget=None,
        test_ride=None,
        sentiment="",
        lead_status=proposed,
    )
    response = deliver(envelope)
    assert response.json()["status"] == "processed"
    stored = Lead.objects.get()
    assert (
        stored.status,
        stored.name,
        stored.interest,
        stored.qualification,
        stored.sentiment,
    ) == (
        "hot",
        "Dana Scully",
        {"bike_interest": "Cargo bike"},
        {"budget": 3000},
        "positive",
    )
    assert stored.last_contact_at == STARTED + timedelta(seconds=94)


def test_it_moves_a_lead_forward_and_adds_to_what_is_known():
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    services.update_lead(
        lead["id"], status=Lead.Status.CONTACTED, interest={"accessory_interest": "helmet"}
    )
    deliver(collected(transcription(), lead_status="Qualified"))
    stored = Lead.objects.get()
    assert stored.status == "qualified"
    assert stored.interest == {"accessory_interest": "helmet", "bike_interest": "City E2 e-bike"}


def test_it_completes_the_initiated_call_matched_by_call_sid():
    make_org()
    initiate()
    opened = Conversation.objects.get()
    assert (opened.call_sid, opened.status, opened.provider_id) == (CALL_SID, "initiated", None)
    deliver(recorded("post_call_transcription.json"))
    call = Conversation.objects.get()
    assert call.pk == opened.pk
    assert (call.status, call.provider_id, call.duration_seconds) == (
        "completed",
        CONVERSATION_ID,
        94,
    )
    assert Message.objects.filter(conversation=call).count() == 5
    assert Lead.objects.count() == 1


def test_it_completes_the_callers_recent_open_call_matched_by_phone():
    make_org()
    initiate(call_sid=None)  # an initiation that carried no call SID
    opened = Conversation.objects.get()
    assert (opened.call_sid, opened.status) == (None, "initiated")
    deliver(recorded("post_call_transcription.json"))
    call = Conversation.objects.get()
    assert call.pk == opened.pk
    assert (call.status, call.provider_id, call.call_sid) == (
        "completed",
        CONVERSATION_ID,
        CALL_SID,
    )


def test_it_opens_a_new_call_when_the_callers_open_call_is_too_old():
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    stale = services.open_conversation(
        lead["id"], "voice", started_at=timezone.now() - timedelta(hours=7)
    )
    deliver(recorded("post_call_transcription.json"))
    assert Conversation.objects.count() == 2
    assert Conversation.objects.get(pk=stale.pk).status == "initiated"
    assert Conversation.objects.get(provider_id=CONVERSATION_ID).status == "completed"


def test_it_shows_the_calls_messages_in_the_next_cached_context_read():
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    sms = services.open_conversation(lead["id"], "sms", started_at=STARTED - timedelta(days=3))
    services.add_message(sms.id, "customer", "Any e-bikes?", created_at=STARTED - timedelta(days=3))
    services.call_context(ORG_NUMBER, CALLER)
    warm = services.call_context(ORG_NUMBER, CALLER)
    assert gate.stats.snapshot()["ctx"]["hits"] == 1  # served from Redis
    assert [m["body"] for m in warm["recent_messages"]] == ["Any e-bikes?"]
    deliver(recorded("post_call_transcription.json"))
    context = services.call_context(ORG_NUMBER, CALLER)
    assert [(m["role"], m["body"]) for m in context["recent_messages"]] == [
        ("customer", "Any e-bikes?"),
        *[(role, body) for role, body, _, _ in EXPECTED_MESSAGES],
    ]
    assert context["recent_messages"][-1]["channel"] == "voice"
    assert context["lead"]["name"] == "Dana Scully"
    assert context["latest_summary"] == SUMMARY
    assert context["conversation_count"] == 2
