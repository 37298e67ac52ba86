"""POST /webhooks/twilio/sms/status: delivery-status callbacks move an outbound text's status
forward only, whatever order and however often they arrive."""

import pytest

from leads import services
from leads.models import Message, WebhookEvent
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.cache_modes import MODES, cache_mode
from tests.leads.twilio_support import (
    EMPTY_TWIML,
    OUTBOUND_SID,
    STATUS_PATH,
    outbound_text,
    post_twilio,
    status,
    stored,
    twilio_account,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _twilio_account():
    with twilio_account():
        yield


@pytest.fixture
def text() -> Message:
    """The outbound text, just handed to Twilio: no callback yet."""
    return outbound_text(make_org(), delivery_status="")


def delivery(message: Message) -> tuple[str, str]:
    message.refresh_from_db()
    return message.delivery_status, message.delivery_error


def test_it_moves_the_status_forward_as_callbacks_arrive_in_order(text):
    seen = []
    for step in ["queued", "sent", "delivered"]:
        response = post_twilio(STATUS_PATH, status(step))
        assert response.status_code == 200
        assert response["Content-Type"] == "text/xml"
        assert response.content.decode() == EMPTY_TWIML
        seen.append(delivery(text))
    assert seen == [("queued", ""), ("sent", ""), ("delivered", "")]
    events = WebhookEvent.objects.order_by("id")
    assert [(e.event_type, e.idempotency_key, e.status) for e in events] == [
        ("sms_status", f"{OUTBOUND_SID}:queued", "processed"),
        ("sms_status", f"{OUTBOUND_SID}:sent", "processed"),
        ("sms_status", f"{OUTBOUND_SID}:delivered", "processed"),
    ]
    assert events.first().payload == status("queued")


@pytest.mark.parametrize(
    ("arrivals", "kept"),
    [
        (["delivered", "sent"], "delivered"),
        (["sent", "sending", "queued"], "sent"),
        (["delivered", "queued", "read"], "read"),
        (["delivered", "failed"], "delivered"),
        (["undelivered", "sent", "delivered"], "undelivered"),
    ],
)
def test_it_keeps_the_furthest_status_when_callbacks_arrive_out_of_order(text, arrivals, kept):
    for step in arrivals:
        assert post_twilio(STATUS_PATH, status(step)).status_code == 200
    assert delivery(text) == (kept, "")
    assert list(WebhookEvent.objects.values_list("status", flat=True)) == ["processed"] * len(
        arrivals
    )


def test_it_treats_a_repeated_callback_as_a_duplicate(text):
    post_twilio(STATUS_PATH, status("sent"))
    before = stored()
    response = post_twilio(STATUS_PATH, status("sent"))
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    assert stored() == before
    event = WebhookEvent.objects.get()
    assert (event.idempotency_key, event.status) == (f"{OUTBOUND_SID}:sent", "processed")
    assert (event.attempts, event.duplicates) == (1, 1)


def test_it_dedupes_callbacks_on_the_idempotency_token(text):
    token = {"I-Twilio-Idempotency-Token": "5d0f2b8e-3c1a-4e7f-b6d9-0a4c2e8f1b37"}
    post_twilio(STATUS_PATH, status("sent"), headers=token)
    before = stored()
    # A retry of that delivery: same token, whatever it carries.
    response = post_twilio(STATUS_PATH, status("delivered"), headers=token)
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    assert stored() == before
    assert delivery(text) == ("sent", "")
    event = WebhookEvent.objects.get()
    assert event.idempotency_key == token["I-Twilio-Idempotency-Token"]
    assert (event.status, event.attempts, event.duplicates) == ("processed", 1, 1)


def test_it_keeps_the_error_code_of_a_failed_delivery(text):
    post_twilio(STATUS_PATH, status("sent"))
    response = post_twilio(STATUS_PATH, status("failed", ErrorCode="30003"))
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    assert delivery(text) == ("failed", "30003")
    event = WebhookEvent.objects.get(idempotency_key=f"{OUTBOUND_SID}:failed")
    assert (event.status, event.payload["ErrorCode"]) == ("processed", "30003")


def test_it_keeps_the_error_code_when_a_late_callback_arrives(text):
    post_twilio(STATUS_PATH, status("undelivered", ErrorCode="30005"))
    post_twilio(STATUS_PATH, status("sent"))
    assert delivery(text) == ("undelivered", "30005")


def test_it_ignores_a_callback_for_an_unknown_message(text):
    before = stored()
    response = post_twilio(
        STATUS_PATH,
        status("delivered", MessageSid="SMffffffffffffffffffffffffffffffff"),
    )
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts) == ("ignored", 1)
    assert event.error == "no message with sid SMffffffffffffffffffffffffffffffff"
    assert stored()["messages"] == before["messages"]
    assert delivery(text) == ("", "")


@pytest.fixture(params=MODES)
def mode(request, shared_redis):
    with cache_mode(request.param, shared_redis):
        yield request.param


def test_it_shows_the_new_status_in_the_next_context_read_in_every_mode(mode):
    outbound_text(make_org(), delivery_status="sent")
    warm = services.call_context(ORG_NUMBER, CALLER)
    assert [m["delivery_status"] for m in warm["recent_messages"]] == ["sent"]
    assert services.call_context(ORG_NUMBER, CALLER) == warm

    response = post_twilio(STATUS_PATH, status("delivered"))
    assert response.content.decode() == EMPTY_TWIML
    assert WebhookEvent.objects.get().status == "processed"
    context = services.call_context(ORG_NUMBER, CALLER)
    assert [(m["role"], m["delivery_status"]) for m in context["recent_messages"]] == [
        ("agent", "delivered")
    ]
