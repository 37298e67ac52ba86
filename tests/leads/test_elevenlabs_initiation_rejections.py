"""The ElevenLabs conversation-initiation webhook's bad input: a clear 4xx for every kind, and
the secret header checked."""

import pytest
from django.test import Client, override_settings

from leads.models import Conversation
from leads.webhooks.deferred import writer
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.initiation_support import (
    CALL_SID,
    PATH,
    SECRET,
    assert_nothing_stored,
    assert_rejected,
    initiate,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("initiation_settings", "caching_on"),
]


# --- bad input: a clear 4xx, nothing stored -----------------------------------------------


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_it_allows_only_post(method):
    make_org()
    client = Client(enforce_csrf_checks=True)
    response = getattr(client, method)(PATH, headers={"X-Webhook-Secret": SECRET})
    assert_rejected(response, 405, f"{method.upper()} is not allowed here; use POST")
    assert response["Allow"] == "POST"
    assert_nothing_stored()


def test_it_refuses_a_missing_secret():
    make_org()
    assert_rejected(initiate(secret=None), 401, "missing X-Webhook-Secret header")
    assert_nothing_stored()


def test_it_refuses_a_wrong_secret():
    make_org()
    assert_rejected(initiate(secret="not-the-secret"), 401, "wrong X-Webhook-Secret header")
    assert_rejected(initiate(secret=SECRET + "x"), 401, "wrong X-Webhook-Secret header")
    assert_nothing_stored()


def test_it_reads_the_secret_from_the_configured_header():
    make_org()
    with override_settings(ELEVENLABS_INITIATION_HEADER="X-Elevenlabs-Secret"):
        refused = initiate()
        accepted = initiate(header="X-Elevenlabs-Secret")
    assert_rejected(refused, 401, "missing X-Elevenlabs-Secret header")
    assert accepted.status_code == 200
    writer.drain()
    assert Conversation.objects.count() == 1


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_it_refuses_a_body_that_is_not_json(content_type):
    make_org()
    response = initiate(content_type=content_type)
    assert_rejected(response, 415, f"content type must be application/json, not {content_type}")
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"caller_id": "+15551230001", ', "body is not valid JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b'["+15551230001"]', "body must be a JSON object"),
    ],
)
def test_it_refuses_malformed_json(body, error):
    make_org()
    assert_rejected(initiate(body=body), 400, error)
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"agent_id": "agent_1"}, "missing required fields: caller_id, called_number"),
        ({"caller_id": CALLER, "call_sid": CALL_SID}, "missing required field: called_number"),
        ({"caller_id": "", "called_number": ORG_NUMBER}, "missing required field: caller_id"),
    ],
)
def test_it_names_the_missing_fields(payload, error):
    make_org()
    assert_rejected(initiate(payload), 400, error)
    assert_nothing_stored()


def test_it_refuses_a_body_over_the_size_limit():
    make_org()
    with override_settings(WEBHOOK_MAX_BODY_BYTES=64):
        response = initiate()
    assert_rejected(response, 413, "body over the 64-byte limit")
    assert_nothing_stored()


def test_it_answers_503_when_no_secret_is_configured():
    make_org()
    with override_settings(ELEVENLABS_INITIATION_SECRET=""):
        response = initiate()
    assert_rejected(response, 503, "ELEVENLABS_INITIATION_SECRET is not configured")
    assert_nothing_stored()


def test_it_accepts_an_unauthenticated_call_when_verification_is_off(frozen_now):
    org = make_org()
    with override_settings(ELEVENLABS_INITIATION_SECRET="", WEBHOOK_VERIFY=False):
        response = initiate(secret=None)
    assert response.status_code == 200
    assert response.json()["dynamic_variables"]["organization_id"] == str(org.id)
    writer.drain()
    assert Conversation.objects.get().call_sid == CALL_SID
