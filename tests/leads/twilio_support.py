"""What the Twilio test modules share: the signing (Twilio's documented algorithm, written
independently of the code under test), posting as Twilio does, the recorded payloads under
tests/leads/data/ and the snapshot of what is stored."""

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.test import Client, override_settings

from leads import services
from leads.models import Conversation, Lead, Message, Organization, WebhookEvent
from tests.factories import CALLER

DATA = Path(__file__).parent / "data"
TOKEN = "twilio-test-auth-token-7f3a"
PUBLIC_BASE_URL = "https://ops.example.com"
SMS_PATH = "/webhooks/twilio/sms"
STATUS_PATH = "/webhooks/twilio/sms/status"
ENDPOINTS = {"sms": SMS_PATH, "status": STATUS_PATH}
FORM = "application/x-www-form-urlencoded"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# The outbound text the recorded status callback reports on.
OUTBOUND_SID = "SMa1b2c3d4e5f60718293a4b5c6d7e8f90"
Params = Mapping[str, str | list[str]]
db = pytest.mark.django_db(transaction=True)


def expected_signature(token: str, url: str, params: Params) -> str:
    """Twilio's documented algorithm: the full URL, then for each parameter name in sorted
    order each of its values in sorted order, name + value; HMAC-SHA1 with the auth token;
    base64. A name may carry one value (str) or several (list)."""
    data = url
    for name in sorted(params):
        values = params[name]
        for value in sorted([values] if isinstance(values, str) else values):
            data += name + value
    digest = hmac.new(token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def as_lists(params: Params) -> dict[str, list[str]]:
    """The shape leads.webhooks.signatures takes: every name with its list of values."""
    return {name: [v] if isinstance(v, str) else list(v) for name, v in params.items()}


def payload(name: str, **changes: str | list[str] | None) -> dict:
    """A recorded Twilio payload (tests/leads/data/twilio_<name>.json), with `changes` applied;
    a change to None removes the field."""
    data = json.loads((DATA / f"twilio_{name}.json").read_text(encoding="utf-8"))
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def sms(**changes: str | list[str] | None) -> dict:
    return payload("inbound_sms", **changes)


def status(message_status: str, **changes: str | list[str] | None) -> dict:
    return payload(
        "status_callback", MessageStatus=message_status, SmsStatus=message_status, **changes
    )


@contextmanager
def twilio_account(**overrides) -> Iterator[None]:
    """The Twilio settings every test here runs with, unless it overrides one."""
    settings = {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "WEBHOOK_VERIFY": True,
        **overrides,
    }
    with override_settings(**settings):
        yield


def post_twilio(
    path: str,
    params: Params,
    *,
    signed_url: str | None = None,
    token: str = TOKEN,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = FORM,
    body: str | bytes | dict | None = None,
):
    """POST `params` as Twilio does: a form body, signed over PUBLIC_BASE_URL + path (query
    string included) unless `signed_url` names another URL. `signature` replaces the computed
    one ("" sends no signature header); `body` replaces the encoded form (a dict is
    encoded by the test client for `content_type`)."""
    url = PUBLIC_BASE_URL + path if signed_url is None else signed_url
    if signature is None:
        signature = expected_signature(token, url, params)
    sent = {"X-Twilio-Signature": signature} if signature else {}
    sent.update(headers or {})
    data = urlencode(params, doseq=True) if body is None else body
    client = Client(enforce_csrf_checks=True)
    return client.post(path, data=data, content_type=content_type, headers=sent)


def outbound_text(org: Organization, delivery_status: str = "queued") -> Message:
    """An agent's text to CALLER, sent through Twilio as OUTBOUND_SID."""
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    thread = services.open_conversation(lead["id"], "sms", status="active")
    return services.add_message(
        thread.id,
        Message.Role.AGENT,
        "Yes, we have three e-bike models.",
        provider_message_id=OUTBOUND_SID,
        delivery_status=delivery_status,
    )


def stored() -> dict:
    """Everything a delivery could have written, comparable before and after."""
    return {
        "events": list(WebhookEvent.objects.values_list("idempotency_key", "status")),
        "leads": list(Lead.objects.order_by("id").values_list("id", "phone", "last_contact_at")),
        "conversations": list(
            Conversation.objects.order_by("id").values_list("id", "channel", "status")
        ),
        "messages": list(
            Message.objects.order_by("id").values_list(
                "id", "role", "body", "delivery_status", "delivery_error"
            )
        ),
    }
