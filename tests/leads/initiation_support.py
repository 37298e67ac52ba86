"""The ElevenLabs conversation-initiation webhook's test helpers: the recorded payload, a known
caller and the variables they are answered with, and what a rejected call leaves stored."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.test import Client

from leads import services
from leads.models import Conversation, Lead, Organization, WebhookEvent
from leads.webhooks.deferred import writer
from monitoring import counters
from tests.factories import CALLER

PATH = "/webhooks/elevenlabs/conversation-initiation"
SECRET = "test-initiation-secret"
DATA = Path(__file__).parent / "data"
# A Monday, 10:00 in New York (the factory organization's time zone; EST until March 8).
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
EARLIER = datetime(2026, 2, 27, 15, 0, tzinfo=UTC)
CALL_SID = "CA5f2d0c9e8b7a6f5e4d3c2b1a0f9e8d7c"
FALLBACK = "webhook.elevenlabs.initiation_fallback"
# What depends on the wall clock (the fallback reads it directly, not through timezone.now).
CLOCK_KEYS = {"current_time", "current_datetime", "current_day", "store_is_open", "store_status"}
FACTORY_HOURS = (
    "Mon 09:00-18:00; Tue closed; Wed closed; Thu closed; Fri closed; Sat closed; Sun closed"
)


def fixture_payload(**changes) -> dict:
    payload = json.loads((DATA / "conversation_initiation.json").read_text())
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not None}


def initiate(
    payload: dict | None = None,
    *,
    body: bytes | None = None,
    secret: str | None = SECRET,
    header: str = "X-Webhook-Secret",
    content_type: str = "application/json",
):
    """POST the way ElevenLabs does: JSON, with the configured secret header."""
    if body is None:
        body = json.dumps(fixture_payload() if payload is None else payload).encode()
    headers = {} if secret is None else {header: secret}
    client = Client(enforce_csrf_checks=True)
    return client.post(PATH, body, content_type=content_type, headers=headers)


def known_caller(org: Organization) -> dict:
    """Dana: qualified, interested in the City E2, one earlier call with a summary."""
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    services.update_lead(
        lead["id"], name="Dana Scully", status=Lead.Status.QUALIFIED, interest={"bike": "City E2"}
    )
    call = services.open_conversation(lead["id"], "voice", provider_id="conv-1", started_at=EARLIER)
    minute = timedelta(minutes=1)
    services.add_message(call.id, "customer", "Do you have e-bikes?", created_at=EARLIER + minute)
    services.add_message(call.id, "agent", "Yes, three models.", created_at=EARLIER + 2 * minute)
    services.complete_conversation(
        call.id, ended_at=EARLIER + 5 * minute, summary="Asked about e-bikes.", title="E-bikes"
    )
    return lead


def known_caller_variables(org: Organization, **changes) -> dict:
    expected = {
        "customer_name": "Dana Scully",
        "customer_phone": CALLER,
        "lead_status": "qualified",
        "bike_interest": "City E2",
        "conversation_context": "customer: Do you have e-bikes?\nagent: Yes, three models.",
        "previous_summary": "Asked about e-bikes.",
        "organization_name": "Pedal Bikes",
        "organization_id": str(org.id),
        "location_address": "1 Main St, Springfield",
        "business_hours": FACTORY_HOURS,
        "current_time": "10:00",
        "current_day": "Monday",
        "current_datetime": "2026-03-02T10:00-05:00",
        "has_customer_name": True,
        "dynamic_greeting": (
            "Hi Dana Scully, welcome back to Pedal Bikes! How can I help you today?"
        ),
        "customer_history": "1 previous conversation; the last on 2026-02-27.",
        "last_topic": "E-bikes",
        "qualification_status": "qualified",
        "interaction_count": 1,
        "last_contact": "2026-02-27T15:02+00:00",
        "is_outbound": False,
        "call_type": "inbound",
        "store_is_open": True,
        "store_status": "open until 18:00",
    }
    expected.update(changes)
    return expected


def answer(dynamic_variables: dict) -> dict:
    return {
        "type": "conversation_initiation_client_data",
        "dynamic_variables": dynamic_variables,
        "conversation_config_override": {
            "agent": {"first_message": dynamic_variables["dynamic_greeting"], "language": "en"}
        },
    }


def without_clock(dynamic_variables: dict) -> dict:
    return {k: v for k, v in dynamic_variables.items() if k not in CLOCK_KEYS}


def fallback_count() -> int:
    return counters.snapshot().get(FALLBACK, 0)


def assert_nothing_stored() -> None:
    writer.drain()
    assert WebhookEvent.objects.count() == 0
    assert Conversation.objects.count() == 0
    assert Lead.objects.count() == 0


def assert_rejected(response, status: int, error: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": error}
