"""Bad input on both Twilio endpoints: a clear 4xx with a JSON {"error": ...} body, never a
500, and nothing stored. (Bad and missing signatures are in test_twilio_signature.py.)"""

import json
from urllib.parse import urlencode

import pytest
from django.db import OperationalError
from django.test import Client, override_settings
from django.test.client import MULTIPART_CONTENT
from django.urls import reverse

from leads.models import WebhookEvent
from leads.webhooks import deliveries
from tests.factories import make_org
from tests.leads.twilio_support import (
    EMPTY_TWIML,
    ENDPOINTS,
    FORM,
    SMS_PATH,
    outbound_text,
    post_twilio,
    sms,
    status,
    stored,
    twilio_account,
)

pytestmark = pytest.mark.django_db(transaction=True)

by_endpoint = pytest.mark.parametrize("path", ENDPOINTS.values(), ids=ENDPOINTS.keys())


@pytest.fixture(autouse=True)
def _twilio_account():
    with twilio_account():
        yield


@pytest.fixture
def world():
    """An organization with one outbound text: a delivery let through would change it."""
    outbound_text(make_org())
    return stored()


def params_for(path: str) -> dict:
    return sms() if path == SMS_PATH else status("delivered")


def test_it_serves_the_paths_twilio_is_configured_with():
    assert reverse("webhooks:twilio-sms") == "/webhooks/twilio/sms"
    assert reverse("webhooks:twilio-sms-status") == "/webhooks/twilio/sms/status"


@by_endpoint
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_it_refuses_other_methods_with_405(world, path, method):
    response = Client(enforce_csrf_checks=True).generic(method, path, data="a=1", content_type=FORM)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json() == {"error": f"{method} is not allowed here; use POST"}
    assert stored() == world


# (id, content type, how the body is made from the params)
WRONG_BODIES = [
    ("json", "application/json", json.dumps),
    ("text", "text/plain", lambda p: "\n".join(f"{k}: {v}" for k, v in p.items())),
    ("xml", "text/xml", lambda p: "<Message/>"),
    # The test client encodes a dict itself for multipart/form-data.
    ("multipart", MULTIPART_CONTENT, lambda p: p),
]


@by_endpoint
@pytest.mark.parametrize(
    ("content_type", "make_body"),
    [b[1:] for b in WRONG_BODIES],
    ids=[b[0] for b in WRONG_BODIES],
)
def test_it_refuses_a_body_that_is_not_a_form_with_415(world, path, content_type, make_body):
    params = params_for(path)
    response = post_twilio(path, params, content_type=content_type, body=make_body(params))
    assert response.status_code == 415
    declared = content_type.split(";")[0]
    assert response.json() == {
        "error": f"content type must be application/x-www-form-urlencoded, not {declared}"
    }
    assert stored() == world


@by_endpoint
def test_it_refuses_a_body_without_a_content_type_with_415(world, path):
    response = post_twilio(path, params_for(path), content_type="")
    assert response.status_code == 415
    assert response.json() == {
        "error": "content type must be application/x-www-form-urlencoded, not missing"
    }
    assert stored() == world


@by_endpoint
def test_it_accepts_a_form_content_type_with_a_charset(world, path):
    response = post_twilio(path, params_for(path), content_type=FORM + "; charset=UTF-8")
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    assert WebhookEvent.objects.get().status == "processed"


# (endpoint, fields removed or emptied, error)
MISSING = [
    ("sms", {"MessageSid": None}, "missing required field: MessageSid"),
    ("sms", {"From": None}, "missing required field: From"),
    ("sms", {"To": ""}, "missing required field: To"),
    ("sms", {"From": None, "To": None}, "missing required fields: From, To"),
    (
        "sms",
        {"MessageSid": "", "From": "", "To": None},
        "missing required fields: MessageSid, From, To",
    ),
    ("status", {"MessageSid": None}, "missing required field: MessageSid"),
    ("status", {"MessageStatus": None}, "missing required field: MessageStatus"),
    (
        "status",
        {"MessageSid": None, "MessageStatus": ""},
        "missing required fields: MessageSid, MessageStatus",
    ),
]


@pytest.mark.parametrize(
    ("endpoint", "changes", "error"),
    MISSING,
    ids=[f"{m[0]}: {', '.join(m[1])}" for m in MISSING],
)
def test_it_names_the_missing_required_fields_with_400(world, endpoint, changes, error):
    path = ENDPOINTS[endpoint]
    params = {**params_for(path), **changes}
    params = {name: value for name, value in params.items() if value is not None}
    response = post_twilio(path, params)  # correctly signed over what is sent
    assert response.status_code == 400
    assert response.json() == {"error": error}
    assert stored() == world


@by_endpoint
def test_it_asks_for_a_retry_when_the_delivery_cannot_be_recorded(world, path, monkeypatch):
    def database_down(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(deliveries, "record", database_down)
    response = post_twilio(path, params_for(path))
    assert response.status_code == 503
    assert response.json() == {"error": "temporarily unable to record the delivery; retry"}
    assert stored() == world


LIMIT = 700


def padded_to(params: dict, size: int) -> dict:
    """`params` with a padding field that makes the encoded form exactly `size` bytes."""
    padding = size - len(urlencode(params)) - len("&Padding=")
    assert padding > 0
    padded = {**params, "Padding": "x" * padding}
    assert len(urlencode(padded)) == size
    return padded


@by_endpoint
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_it_refuses_a_body_over_the_size_limit_with_413(world, path, signed):
    params = padded_to(params_for(path), LIMIT + 1)
    with override_settings(WEBHOOK_MAX_BODY_BYTES=LIMIT):
        response = post_twilio(path, params, signature=None if signed else "")
    assert response.status_code == 413
    assert response.json() == {"error": f"body over the {LIMIT}-byte limit"}
    assert stored() == world


@by_endpoint
def test_it_accepts_a_body_of_exactly_the_size_limit(world, path):
    params = padded_to(params_for(path), LIMIT)
    with override_settings(WEBHOOK_MAX_BODY_BYTES=LIMIT):
        response = post_twilio(path, params)
    assert response.status_code == 200
    assert WebhookEvent.objects.get().status == "processed"


def test_it_answers_a_form_with_too_many_fields_with_a_json_error(world):
    answers = []
    for path in ENDPOINTS.values():
        params = {**params_for(path), **{f"Field{n}": "1" for n in range(1000)}}
        assert len(urlencode(params)) < 1024 * 1024  # under WEBHOOK_MAX_BODY_BYTES
        response = post_twilio(path, params)
        is_json = response["Content-Type"] == "application/json"
        answers.append((response.status_code, is_json and list(response.json())))
    assert answers == [(400, ["error"])] * 2
    assert stored() == world
