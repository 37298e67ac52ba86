"""X-Twilio-Signature on both Twilio endpoints, against vectors computed with an implementation
of Twilio's documented algorithm written independently of the code under test
(tests/leads/twilio_support.py)."""

import base64
import hmac

import pytest
from django.test import override_settings

from leads.models import Message, WebhookEvent
from leads.webhooks.signatures import BadSignature, twilio_signature, verify_twilio
from tests.factories import make_org
from tests.leads.twilio_support import (
    EMPTY_TWIML,
    ENDPOINTS,
    PUBLIC_BASE_URL,
    SMS_PATH,
    STATUS_PATH,
    TOKEN,
    as_lists,
    db,
    expected_signature,
    outbound_text,
    post_twilio,
    sms,
    status,
    stored,
    twilio_account,
)


@pytest.fixture(autouse=True)
def _twilio_account():
    with twilio_account():
        yield


@pytest.fixture
def world():
    """An organization answering on ORG_NUMBER with one outbound text to CALLER, so that a
    delivery let through would visibly change something on either endpoint."""
    org = make_org()
    outbound_text(org)
    return stored()


DOCS_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"


def docs_params(caller: str) -> dict[str, str]:
    return {
        "CallSid": "CA1234567890ABCDE",
        "Caller": caller,
        "Digits": "1234",
        "From": caller,
        "To": "+18005551212",
    }


# The worked example of Twilio's request-validation docs (token "12345") is quoted with either
# of two callers. Each pairing below was first reproduced with expected_signature() before it
# was kept; GvWf1cFY... with +12349013030 does not reproduce (it is +14158675310's).
@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
        ("+12349013030", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
    ],
)
def test_it_reproduces_the_example_in_twilios_documentation(caller, expected):
    params = docs_params(caller)
    assert expected_signature("12345", DOCS_URL, params) == expected
    assert twilio_signature("12345", DOCS_URL, as_lists(params)) == expected
    verify_twilio("12345", expected, DOCS_URL, as_lists(params))


def test_it_refuses_the_documented_example_once_tampered():
    params = docs_params("+14158675310")
    with pytest.raises(BadSignature, match="^signature does not match$"):
        verify_twilio(
            "12345",
            "GvWf1cFY/Q7PnoempGyD5oXAezc=",
            DOCS_URL,
            as_lists(params) | {"Digits": ["1235"]},
        )
    with pytest.raises(BadSignature, match="^signature does not match$"):
        verify_twilio(
            "12345",
            "GvWf1cFY/Q7PnoempGyD5oXAezc=",
            DOCS_URL.replace("bar=2", "bar=3"),
            as_lists(params),
        )


PORT_443 = "https://ops.example.com:443"

# (id, request path, URL Twilio signed, params)
VECTORS = [
    ("plain URL", SMS_PATH, PUBLIC_BASE_URL + SMS_PATH, sms()),
    (
        "query string",
        SMS_PATH + "?account=pedal-bikes&note=a%20b",
        PUBLIC_BASE_URL + SMS_PATH + "?account=pedal-bikes&note=a%20b",
        sms(),
    ),
    (
        # One name sent twice, its values out of order: each name's values are sorted.
        "repeated parameter",
        SMS_PATH,
        PUBLIC_BASE_URL + SMS_PATH,
        sms(
            NumMedia="2",
            MediaUrl0=[
                "https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME2",
                "https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME1",
            ],
            MediaContentType0=["image/png", "image/jpeg"],
        ),
    ),
    (
        "unicode body",
        SMS_PATH,
        PUBLIC_BASE_URL + SMS_PATH,
        sms(Body="¿Tienen bicis eléctricas? 🚲 Ça coûte combien — ありがとう"),
    ),
    ("explicit default port", SMS_PATH, PORT_443 + SMS_PATH, sms()),
    (
        "status callback with a query string",
        STATUS_PATH + "?attempt=1",
        PUBLIC_BASE_URL + STATUS_PATH + "?attempt=1",
        status("delivered"),
    ),
    ("status callback, explicit default port", STATUS_PATH, PORT_443 + STATUS_PATH, status("sent")),
]


@pytest.mark.parametrize(
    ("path", "url", "params"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_it_computes_the_same_signature_as_twilios_algorithm(path, url, params):
    assert twilio_signature(TOKEN, url, as_lists(params)) == expected_signature(TOKEN, url, params)


def test_it_signs_the_port_and_the_value_order_into_the_vectors():
    """The vectors above test something: the port changes the signature, and so would a
    value order that was not sorted."""
    params = sms()
    assert expected_signature(TOKEN, PORT_443 + SMS_PATH, params) != expected_signature(
        TOKEN, PUBLIC_BASE_URL + SMS_PATH, params
    )
    ordered = expected_signature(TOKEN, PUBLIC_BASE_URL, {"MediaUrl0": ["a", "b"]})
    assert expected_signature(TOKEN, PUBLIC_BASE_URL, {"MediaUrl0": ["b", "a"]}) == ordered
    unsorted = hmac.new(TOKEN.encode(), f"{PUBLIC_BASE_URL}MediaUrl0bMediaUrl0a".encode(), "sha1")
    assert base64.b64encode(unsorted.digest()).decode() != ordered


@db
@pytest.mark.parametrize(
    ("path", "url", "params"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_it_accepts_a_delivery_signed_with_twilios_algorithm(path, url, params):
    org = make_org()
    message = outbound_text(org)
    response = post_twilio(path, params, signed_url=url)
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    event = WebhookEvent.objects.get()
    assert (event.status, event.error, event.payload) == ("processed", "", params)
    if path.split("?")[0] == SMS_PATH:
        received = Message.objects.get(provider_message_id=params["MessageSid"])
        assert (received.role, received.body) == ("customer", params["Body"])
    else:
        message.refresh_from_db()
        assert message.delivery_status == params["MessageStatus"]


@db
@pytest.mark.parametrize("path", ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_it_accepts_a_url_signed_without_the_port_when_the_public_url_names_it(path):
    outbound_text(make_org())
    with override_settings(PUBLIC_BASE_URL=PORT_443):
        response = post_twilio(path, _params(path), signed_url=PUBLIC_BASE_URL + path)
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    assert WebhookEvent.objects.get().status == "processed"


def _params(path: str) -> dict:
    return sms() if path == SMS_PATH else status("delivered")


def _tampered(params: dict) -> dict:
    """The same delivery with its content changed after signing."""
    if "Body" in params:
        return {**params, "Body": params["Body"] + " (edited)"}
    return {**params, "MessageStatus": "read"}


# (id, how the delivery is made from a correctly signed one)
FORGERIES = [
    ("tampered value", lambda path, p: {"params": _tampered(p)}),
    ("parameter added", lambda path, p: {"params": {**p, "Extra": "1"}}),
    ("parameter removed", lambda path, p: {"params": {k: v for k, v in p.items() if k != "To"}}),
    ("other token", lambda path, p: {"token": "another-accounts-token"}),
    (
        "signed over the internal URL",
        lambda path, p: {"signed_url": "http://testserver" + path},
    ),
    (
        "signed over http",
        lambda path, p: {"signed_url": "http://ops.example.com" + path},
    ),
    (
        "signed over another port",
        lambda path, p: {"signed_url": "https://ops.example.com:8443" + path},
    ),
    (
        "signed over another query string",
        lambda path, p: {
            "path": path + "?account=2",
            "signed_url": PUBLIC_BASE_URL + path + "?account=1",
        },
    ),
    (
        "query string added after signing",
        lambda path, p: {"path": path + "?account=2", "signed_url": PUBLIC_BASE_URL + path},
    ),
]


@db
@pytest.mark.parametrize("path", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@pytest.mark.parametrize("forge", [f[1] for f in FORGERIES], ids=[f[0] for f in FORGERIES])
def test_it_refuses_a_forged_delivery_and_stores_nothing(world, path, forge):
    signed = _params(path)
    change = forge(path, signed)
    target = change.get("path", path)
    url = change.get("signed_url", PUBLIC_BASE_URL + target)
    signature = expected_signature(change.get("token", TOKEN), url, signed)
    response = post_twilio(target, change.get("params", signed), signature=signature)
    assert response.status_code == 403
    assert response.json() == {"error": "signature does not match"}
    assert stored() == world


@db
@pytest.mark.parametrize("path", ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_it_refuses_a_delivery_without_a_signature_and_stores_nothing(world, path):
    response = post_twilio(path, _params(path), signature="")
    assert response.status_code == 403
    assert response.json() == {"error": "missing X-Twilio-Signature header"}
    assert stored() == world


@db
@pytest.mark.parametrize("path", ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_it_refuses_a_malformed_signature_and_stores_nothing(world, path):
    response = post_twilio(path, _params(path), signature="not base64 at all")
    assert response.status_code == 403
    assert response.json() == {"error": "signature does not match"}
    assert stored() == world


@db
def test_it_refuses_a_signature_with_non_ascii_characters_with_403(world):
    answers = []
    for path in ENDPOINTS.values():
        response = post_twilio(path, _params(path), signature="GvWf1cFY/Q7PnoempGyD5oXAezé=")
        answers.append((response.status_code, response.json()))
    assert answers == [(403, {"error": "malformed X-Twilio-Signature header"})] * 2
    assert stored() == world


@db
@pytest.mark.parametrize("path", ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_it_answers_503_when_no_auth_token_is_configured(world, path):
    with override_settings(TWILIO_AUTH_TOKEN=""):
        response = post_twilio(path, _params(path))
    assert response.status_code == 503
    assert response.json() == {"error": "TWILIO_AUTH_TOKEN is not configured"}
    assert stored() == world


@db
@pytest.mark.parametrize("path", ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_it_accepts_unsigned_deliveries_only_with_verification_switched_off(world, path):
    with override_settings(TWILIO_AUTH_TOKEN="", WEBHOOK_VERIFY=False):
        response = post_twilio(path, _params(path), signature="")
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    assert WebhookEvent.objects.get().status == "processed"
