"""The ElevenLabs post-call webhook's test helpers: recorded deliveries, signed here with the
test secret (HMAC-SHA256 over "<t>." + raw body, computed independently of the code under
test), and what a delivery leaves stored."""

import copy
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

from django.test import Client

from leads.models import Conversation, Lead, Message, WebhookEvent
from leads.webhooks.deferred import writer
from monitoring import counters
from tests.leads.initiation_support import DATA
from tests.leads.initiation_support import PATH as INITIATION_PATH
from tests.leads.initiation_support import SECRET as INITIATION_SECRET

PATH = "/webhooks/elevenlabs/post-call"
SECRET = "wsec_test_post_call_secret"
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
