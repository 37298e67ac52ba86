"""The ElevenLabs post-call webhook: recorded deliveries signed here with the test secret
(HMAC-SHA256 over "<t>." + raw body, computed independently of the code under test), stored
once, acted on once, never a step back for a lead, failures kept for replay, and a clear 4xx
for every kind of bad input with nothing stored."""

import copy
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone

from leads import services
from leads.models import Conversation, Lead, Message, PhoneNumber, WebhookEvent
from leads.webhooks.deferred import writer
from monitoring import counters
from monitoring.cache import gate
from tests.conftest import turn_caching
from tests.factories import CALLER, ORG_NUMBER, make_org

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/webhooks/elevenlabs/post-call"
INITIATION_PATH = "/webhooks/elevenlabs/conversation-initiation"
SECRET = "wsec_test_post_call_secret"
INITIATION_SECRET = "test-initiation-secret"
DATA = Path(__file__).parent / "data"
CONVERSATION_ID = "conv_01jx4w2n7c8d9e0f1g2h3j4k5m"
FAILED_CONVERSATION_ID = "conv_01jx4w9q3r4s5t6u7v8w9x0y1z"
CALL_SID = "CA5f2d0c9e8b7a6f5e4d3c2b1a0f9e8d7c"
STARTED = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # metadata.start_time_unix_secs
SUMMARY = (
    "Dana asked about the City E2 e-bike; two are in stock in blue. She booked a test ride for "
    "Saturday at 10:00 and has a budget of about $2,000."
)
AUDIO_BASE64 = (
    "SUQzBAAAAAAAAExBTUUzLjEwMAAAAAAAAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw=="
)
AUDIO_SUMMARY = {
    "omitted": True,
    "bytes": 64,
    "sha256": "57b507c007cad728aacf2c125c855bc5d42aab652cb37a53c34df017014af979",
}


@pytest.fixture(autouse=True)
def configured():
    with override_settings(
        ELEVENLABS_WEBHOOK_SECRET=SECRET,
        ELEVENLABS_INITIATION_SECRET=INITIATION_SECRET,
        ELEVENLABS_INITIATION_HEADER="X-Webhook-Secret",
        WEBHOOK_VERIFY=True,
        WEBHOOK_MAX_AGE=30 * 60,
        WEBHOOK_MAX_CLOCK_SKEW=5 * 60,
        WEBHOOK_MAX_BODY_BYTES=1024 * 1024,
    ):
        yield


@pytest.fixture(autouse=True)
def caching(shared_redis):
    """Caching on, against a real Redis (this test's keys only)."""
    turn_caching(True)
    yield shared_redis
    writer.drain()


def recorded(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def transcription(**data_changes) -> dict:
    envelope = recorded("post_call_transcription.json")
    envelope["data"].update(data_changes)
    return envelope


def collected(envelope: dict, **values) -> dict:
    """The envelope with these data-collection values (None: collected nothing)."""
    envelope = copy.deepcopy(envelope)
    results = envelope["data"]["analysis"]["data_collection_results"]
    for name, value in values.items():
        results[name] = {"data_collection_id": name, "value": value, "rationale": ""}
    return envelope


def signature(body: bytes, *, stamp: int | None = None, secret: str = SECRET) -> str:
    stamp = int(time.time()) if stamp is None else stamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v0={digest}"


def deliver(
    envelope: dict | None = None,
    *,
    body: bytes | None = None,
    header: str | None = None,
    signed: bool = True,
    content_type: str = "application/json",
):
    """POST as ElevenLabs does: the raw JSON body, signed now with the test secret."""
    if body is None:
        body = json.dumps(envelope).encode()
    headers = {}
    if header is not None:
        headers["ElevenLabs-Signature"] = header
    elif signed:
        headers["ElevenLabs-Signature"] = signature(body)
    client = Client(enforce_csrf_checks=True)
    return client.post(PATH, body, content_type=content_type, headers=headers)


def initiate(**changes) -> None:
    """The call's initiation, through its own webhook, recorded (drained)."""
    payload = {**recorded("conversation_initiation.json"), **changes}
    payload = {name: value for name, value in payload.items() if value is not None}
    response = Client(enforce_csrf_checks=True).post(
        INITIATION_PATH,
        json.dumps(payload),
        content_type="application/json",
        headers={"X-Webhook-Secret": INITIATION_SECRET},
    )
    assert response.status_code == 200
    writer.drain()


def count(name: str) -> int:
    return counters.snapshot().get(name, 0)


def assert_rejected(response, status: int, error: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": error}


def assert_nothing_stored() -> None:
    assert WebhookEvent.objects.count() == 0
    assert Conversation.objects.count() == 0
    assert Message.objects.count() == 0
    assert Lead.objects.count() == 0


def messages() -> list[tuple]:
    return list(
        Message.objects.order_by("created_at", "id").values_list(
            "role", "body", "created_at", "provider_message_id"
        )
    )


EXPECTED_MESSAGES = [
    (
        "agent",
        "Hi Dana, welcome back to Pedal Bikes! How can I help you today?",
        STARTED,
        f"{CONVERSATION_ID}:0",
    ),
    (
        "customer",
        "Hi, is the City E2 e-bike still in stock?",
        STARTED + timedelta(seconds=4),
        f"{CONVERSATION_ID}:1",
    ),
    # turn 2 is a tool call with no message: not a message
    (
        "agent",
        "Yes, we have two in blue. Would you like to book a test ride?",
        STARTED + timedelta(seconds=11.5),
        f"{CONVERSATION_ID}:3",
    ),
    (
        "customer",
        "Saturday morning works. My budget is about two thousand.",
        STARTED + timedelta(seconds=19),
        f"{CONVERSATION_ID}:4",
    ),
    (
        "agent",
        "Booked for Saturday at 10. See you then, Dana!",
        STARTED + timedelta(seconds=30),
        f"{CONVERSATION_ID}:5",
    ),
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


# --- bad input: a clear 4xx, nothing stored -----------------------------------------------


@pytest.mark.parametrize("method", ["get", "put"])
def test_it_allows_only_post(method):
    body = json.dumps(recorded("post_call_transcription.json")).encode()
    client = Client(enforce_csrf_checks=True)
    response = getattr(client, method)(PATH, headers={"ElevenLabs-Signature": signature(body)})
    assert_rejected(response, 405, f"{method.upper()} is not allowed here; use POST")
    assert response["Allow"] == "POST"
    assert_nothing_stored()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_it_refuses_a_body_that_is_not_json(content_type):
    make_org()
    response = deliver(recorded("post_call_transcription.json"), content_type=content_type)
    assert_rejected(response, 415, f"content type must be application/json, not {content_type}")
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"type": "post_call_transcription", "data": {', "body is not valid JSON"),
        (b"\xff\xfe\x00", "body is not valid JSON"),
        (b'[{"type": "post_call_transcription"}]', "body must be a JSON object"),
    ],
)
def test_it_refuses_malformed_json(body, error):
    make_org()
    assert_rejected(deliver(body=body), 400, error)
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("envelope", "error"),
    [
        ({"event_timestamp": 1772463710}, "missing required fields: type, data"),
        ({"type": "post_call_transcription"}, "missing required field: data"),
        (
            {"type": "post_call_transcription", "data": {"agent_id": "agent_1"}},
            "missing required field in data: conversation_id",
        ),
        ({"type": "post_call_audio", "data": "conv_1"}, "data must be a JSON object"),
    ],
)
def test_it_names_the_missing_fields(envelope, error):
    make_org()
    assert_rejected(deliver(envelope), 400, error)
    assert_nothing_stored()


def test_it_refuses_a_body_over_the_size_limit():
    make_org()
    with override_settings(WEBHOOK_MAX_BODY_BYTES=512):
        response = deliver(recorded("post_call_transcription.json"))
    assert_rejected(response, 413, "body over the 512-byte limit")
    assert_nothing_stored()


def test_it_refuses_a_delivery_without_a_signature():
    make_org()
    response = deliver(recorded("post_call_transcription.json"), signed=False)
    assert_rejected(response, 401, "missing ElevenLabs-Signature header")
    assert_nothing_stored()


@pytest.mark.parametrize(
    "header", ["v0=0123abcd", "t=1772463710", "t=soon,v0=0123abcd", "sha256=0123abcd"]
)
def test_it_refuses_a_malformed_signature_header(header):
    make_org()
    response = deliver(recorded("post_call_transcription.json"), header=header)
    assert_rejected(response, 401, "malformed ElevenLabs-Signature header")
    assert_nothing_stored()


def test_it_refuses_a_signature_made_with_another_secret():
    make_org()
    body = json.dumps(recorded("post_call_transcription.json")).encode()
    response = deliver(body=body, header=signature(body, secret="someone-elses-secret"))
    assert_rejected(response, 401, "signature does not match")
    assert_nothing_stored()


def test_it_refuses_a_body_changed_after_signing():
    make_org()
    body = json.dumps(recorded("post_call_transcription.json")).encode()
    tampered = body.replace(b'"value": "hot"', b'"value": "customer"')
    assert tampered != body
    response = deliver(body=tampered, header=signature(body))
    assert_rejected(response, 401, "signature does not match")
    assert_nothing_stored()


def test_it_refuses_a_signature_for_another_timestamp():
    make_org()
    body = json.dumps(recorded("post_call_transcription.json")).encode()
    now = int(time.time())
    genuine = signature(body, stamp=now - 60)
    replayed = genuine.replace(f"t={now - 60}", f"t={now}")
    assert_rejected(deliver(body=body, header=replayed), 401, "signature does not match")
    assert_nothing_stored()


def test_it_refuses_a_stale_timestamp():
    make_org()
    body = json.dumps(recorded("post_call_transcription.json")).encode()
    stale = signature(body, stamp=int(time.time()) - 31 * 60)
    assert_rejected(deliver(body=body, header=stale), 401, "signature timestamp too old")
    assert_nothing_stored()


def test_it_refuses_a_timestamp_too_far_in_the_future():
    make_org()
    body = json.dumps(recorded("post_call_transcription.json")).encode()
    future = signature(body, stamp=int(time.time()) + 6 * 60)
    assert_rejected(deliver(body=body, header=future), 401, "signature timestamp in the future")
    assert_nothing_stored()


def test_it_accepts_timestamps_within_the_age_and_skew_limits():
    make_org()
    body = json.dumps(recorded("post_call_transcription.json")).encode()
    old = deliver(body=body, header=signature(body, stamp=int(time.time()) - 29 * 60))
    early = deliver(body=body, header=signature(body, stamp=int(time.time()) + 4 * 60))
    event = WebhookEvent.objects.get()
    assert old.json() == {"status": "processed", "event": event.pk}
    assert early.json() == {"status": "duplicate", "event": event.pk}


def test_it_answers_503_when_no_secret_is_configured():
    make_org()
    with override_settings(ELEVENLABS_WEBHOOK_SECRET=""):
        response = deliver(recorded("post_call_transcription.json"))
    assert_rejected(response, 503, "ELEVENLABS_WEBHOOK_SECRET is not configured")
    assert_nothing_stored()


def test_it_accepts_an_unsigned_delivery_when_verification_is_off():
    make_org()
    with override_settings(ELEVENLABS_WEBHOOK_SECRET="", WEBHOOK_VERIFY=False):
        response = deliver(recorded("post_call_transcription.json"), signed=False)
    event = WebhookEvent.objects.get()
    assert response.json() == {"status": "processed", "event": event.pk}
    assert messages() == EXPECTED_MESSAGES
