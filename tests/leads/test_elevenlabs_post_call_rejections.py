"""The ElevenLabs post-call webhook's bad input: a clear 4xx for every kind, nothing stored;
the signature's secret, body and timestamp checked."""

import json
import time

import pytest
from django.test import Client, override_settings

from leads.models import WebhookEvent
from tests.factories import make_org
from tests.leads.initiation_support import assert_rejected
from tests.leads.post_call_support import (
    EXPECTED_MESSAGES,
    PATH,
    assert_nothing_stored,
    deliver,
    messages,
    recorded,
    signature,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("post_call_settings", "caching_on"),
]


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
