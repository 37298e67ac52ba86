"""The ElevenLabs post-call webhook's other events: audio noted but not stored, failed
initiations marking their call, unknown event types ignored, failures kept for replay."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from leads import services
from leads.models import Conversation, Lead, Message, PhoneNumber, WebhookEvent
from monitoring.cache import gate
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.post_call_support import (
    AUDIO_BASE64,
    AUDIO_SUMMARY,
    CALL_SID,
    CONVERSATION_ID,
    EXPECTED_MESSAGES,
    FAILED_CONVERSATION_ID,
    count,
    deliver,
    initiate,
    messages,
    recorded,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("post_call_settings", "caching_on"),
]


# --- audio and initiation failure ---------------------------------------------------------


def test_it_notes_the_audio_without_storing_it():
    make_org()
    deliver(recorded("post_call_transcription.json"))
    envelope = recorded("post_call_audio.json")
    response = deliver(envelope)
    event = WebhookEvent.objects.get(event_type="post_call_audio")
    assert response.status_code == 200
    assert response.json() == {"status": "processed", "event": event.pk}
    assert (event.status, event.idempotency_key) == (
        "processed",
        f"post_call_audio:{CONVERSATION_ID}",
    )
    assert event.payload == {**envelope, "data": {**envelope["data"], "full_audio": AUDIO_SUMMARY}}
    assert Conversation.objects.get().analysis["audio"] == AUDIO_SUMMARY
    stored = WebhookEvent.objects.filter(pk=event.pk).values_list("payload", flat=True).get()
    assert AUDIO_BASE64 not in json.dumps(stored)
    assert AUDIO_BASE64[:40] not in json.dumps(list(Conversation.objects.values("analysis")))


def test_it_accepts_audio_for_a_call_not_recorded_yet_as_ignored():
    make_org()
    response = deliver(recorded("post_call_audio.json"))
    event = WebhookEvent.objects.get()
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "event": event.pk}
    assert (event.status, event.error) == ("ignored", "audio for a conversation not recorded yet")
    assert event.payload["data"]["full_audio"] == AUDIO_SUMMARY
    assert Conversation.objects.count() == 0


def test_it_marks_a_call_failed_matched_by_conversation_id():
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    call = services.open_conversation(lead["id"], "voice", provider_id=FAILED_CONVERSATION_ID)
    response = deliver(recorded("call_initiation_failure.json"))
    event = WebhookEvent.objects.get()
    assert response.json() == {"status": "processed", "event": event.pk}
    failed = Conversation.objects.get()
    assert failed.pk == call.pk
    assert failed.status == "failed"
    assert failed.ended_at is not None
    assert failed.analysis == {"failure_reason": "busy"}
    assert event.idempotency_key == f"call_initiation_failure:{FAILED_CONVERSATION_ID}"


def test_it_marks_the_initiated_call_failed_matched_by_call_sid():
    make_org()
    initiate(caller_id=ORG_NUMBER, called_number=CALLER)  # an outbound call
    response = deliver(recorded("call_initiation_failure.json"))
    assert response.json()["status"] == "processed"
    call = Conversation.objects.get()
    assert (call.call_sid, call.status) == (CALL_SID, "failed")


# --- unknown events and processing failures -----------------------------------------------


def test_it_records_an_unknown_event_type_as_ignored():
    make_org()
    envelope = {
        "type": "post_call_summary",
        "event_timestamp": 1772463720,
        "data": {"agent_id": "agent_1", "conversation_id": CONVERSATION_ID},
    }
    response = deliver(envelope)
    event = WebhookEvent.objects.get()
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "event": event.pk}
    assert (event.event_type, event.status, event.error) == (
        "post_call_summary",
        "ignored",
        "unhandled event type 'post_call_summary'",
    )
    assert Conversation.objects.count() == 0
    assert deliver(envelope).json() == {"status": "duplicate", "event": event.pk}


def test_it_keeps_a_failed_delivery_for_replay():
    org = make_org()
    envelope = recorded("post_call_transcription.json")
    envelope["data"]["metadata"]["phone_call"]["agent_number"] = "+15550000002"  # not ours yet
    failures = count("webhook.elevenlabs.failed")
    response = deliver(envelope)
    event = WebhookEvent.objects.get()
    # Answered 200 on purpose: the provider disables a webhook that keeps failing.
    assert response.status_code == 200
    assert response.json() == {"status": "failed", "event": event.pk}
    assert (event.status, event.attempts) == ("failed", 1)
    assert event.error == (
        f"leads.services.calls.CallNotMatched: no conversation {CONVERSATION_ID} and no "
        "organization/customer to open one (agent_number=+15550000002, "
        f"external_number={CALLER})"
    )
    assert count("webhook.elevenlabs.failed") == failures + 1
    assert (Conversation.objects.count(), Message.objects.count(), Lead.objects.count()) == (
        0,
        0,
        0,
    )

    # The fix, as the organization admin makes it: the number added, the cache flushed (the
    # failed lookup cached "no organization answers on +15550000002").
    PhoneNumber.objects.create(organization=org, e164="+15550000002")
    gate.flush(actor="ops", reason="number added to Pedal Bikes", source="admin")
    out = StringIO()
    call_command("replay_webhooks", stdout=out)
    event.refresh_from_db()
    assert (event.status, event.error, event.attempts) == ("processed", "", 2)
    assert out.getvalue().splitlines() == [
        "1 failed delivery",
        f"  #{event.pk} elevenlabs post_call_transcription "
        f"post_call_transcription:{CONVERSATION_ID}: processed",
    ]
    assert messages() == EXPECTED_MESSAGES
    assert Conversation.objects.get().status == "completed"

    again = StringIO()
    call_command("replay_webhooks", stdout=again)
    event.refresh_from_db()
    assert again.getvalue().splitlines() == ["0 failed deliveries"]
    assert (event.status, event.attempts) == ("processed", 2)
    assert len(messages()) == 5
