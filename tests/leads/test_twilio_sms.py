"""POST /webhooks/twilio/sms: an inbound text stored on the lead's open SMS conversation and
answered with TwiML, recorded once per delivery, the same in every cache mode."""

import asyncio
from datetime import timedelta
from io import StringIO
from xml.etree import ElementTree

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.db.models import F

from leads import services
from leads.models import Conversation, Lead, Message, Organization, PhoneNumber, WebhookEvent
from monitoring.cache import gate
from monitoring.events import DASHBOARD_GROUP
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.cache_modes import MODES, cache_mode
from tests.leads.twilio_support import (
    EMPTY_TWIML,
    SMS_PATH,
    post_twilio,
    sms,
    stored,
    twilio_account,
)

pytestmark = pytest.mark.django_db(transaction=True)

SID = sms()["MessageSid"]
UNKNOWN_NUMBER = "+15559999999"
# Needs escaping in XML: "<", ">" and "&"; quotes are legal in element text.
AUTO_REPLY = 'Thanks! We answer within 1h <Mon-Fri> & "soon" at weekends.'
AUTO_REPLY_TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
    'Thanks! We answer within 1h &lt;Mon-Fri&gt; &amp; "soon" at weekends.'
    "</Message></Response>"
)


@pytest.fixture(autouse=True)
def _twilio_account():
    with twilio_account():
        yield


@pytest.fixture(params=MODES)
def mode(request, shared_redis):
    with cache_mode(request.param, shared_redis):
        yield request.param


def with_auto_reply(org: Organization, reply: str = AUTO_REPLY) -> Organization:
    Organization.objects.filter(pk=org.pk).update(sms_auto_reply=reply)
    return org


def add_number(org: Organization, e164: str) -> None:
    """A number added to an organization, followed by the cache flush the admin does when an
    organization's numbers change (an unknown number's "no organization" may be cached)."""
    PhoneNumber.objects.create(organization=org, e164=e164)
    gate.flush(actor="test", reason="number added", source="admin")


def test_it_stores_an_inbound_text_and_answers_empty_twiml():
    org = make_org()
    response = post_twilio(SMS_PATH, sms())
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert response.content.decode() == EMPTY_TWIML
    lead = Lead.objects.get()
    assert (lead.organization_id, lead.phone) == (org.id, CALLER)
    thread = Conversation.objects.get()
    assert (thread.lead_id, thread.channel, thread.status) == (lead.id, "sms", "active")
    message = Message.objects.get()
    assert (message.conversation_id, message.lead_id, message.role) == (
        thread.id,
        lead.id,
        "customer",
    )
    assert message.body == "Do you have e-bikes in stock?"
    assert (message.provider_message_id, message.delivery_status) == (SID, "received")
    assert lead.last_contact_at == message.created_at
    event = WebhookEvent.objects.get()
    assert (event.provider, event.event_type, event.idempotency_key) == ("twilio", "sms", SID)
    assert (event.status, event.error, event.attempts, event.duplicates) == ("processed", "", 1, 0)
    assert event.payload == sms()


def test_it_stores_the_sender_in_e164_form():
    make_org()
    response = post_twilio(SMS_PATH, sms(From="+1 (555) 123-0001"))
    assert response.status_code == 200
    assert list(Lead.objects.values_list("phone", flat=True)) == [CALLER]


def test_it_adds_the_text_to_an_existing_lead():
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    services.update_lead(lead["id"], name="Dana")
    post_twilio(SMS_PATH, sms())
    assert list(Lead.objects.values_list("id", "name")) == [(lead["id"], "Dana")]
    assert Message.objects.get().lead_id == lead["id"]


def test_it_answers_the_auto_reply_as_escaped_twiml_and_stores_it():
    with_auto_reply(make_org())
    response = post_twilio(SMS_PATH, sms())
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert response.content.decode() == AUTO_REPLY_TWIML
    assert ElementTree.fromstring(response.content).findtext("Message") == AUTO_REPLY
    customer, agent = Message.objects.order_by("id")
    assert (customer.role, customer.body) == ("customer", "Do you have e-bikes in stock?")
    assert (agent.role, agent.body, agent.delivery_status) == ("agent", AUTO_REPLY, "queued")
    assert agent.provider_message_id is None
    assert agent.conversation_id == customer.conversation_id
    assert Conversation.objects.count() == 1


def test_it_joins_a_second_text_within_the_window_to_the_same_conversation():
    make_org()
    post_twilio(SMS_PATH, sms())
    post_twilio(SMS_PATH, sms(MessageSid="SM0000000000000000000000000000002b", Body="Any red?"))
    thread = Conversation.objects.get()
    assert thread.status == "active"
    assert list(thread.messages.order_by("id").values_list("body", flat=True)) == [
        "Do you have e-bikes in stock?",
        "Any red?",
    ]
    assert list(WebhookEvent.objects.values_list("status", flat=True)) == ["processed"] * 2


@pytest.mark.parametrize(("hours_ago", "same_thread"), [(23, True), (25, False)])
def test_it_opens_a_new_conversation_only_after_the_thread_window(hours_ago, same_thread):
    make_org()
    post_twilio(SMS_PATH, sms())
    first = Conversation.objects.get()
    # Time moved explicitly: the first text (and its thread) are made `hours_ago` old.
    Message.objects.update(created_at=F("created_at") - timedelta(hours=hours_ago))
    Conversation.objects.update(started_at=F("started_at") - timedelta(hours=hours_ago))
    last = Message.objects.get().created_at
    post_twilio(SMS_PATH, sms(MessageSid="SM0000000000000000000000000000002b", Body="Still?"))
    second = Message.objects.get(body="Still?")
    first.refresh_from_db()
    if same_thread:
        assert second.conversation_id == first.id
        assert (first.status, first.ended_at) == ("active", None)
    else:
        assert second.conversation_id != first.id
        assert (first.status, first.ended_at) == ("completed", last)
        assert second.conversation.status == "active"
    assert Conversation.objects.count() == (1 if same_thread else 2)


def test_it_records_a_text_to_an_unknown_number_as_failed_and_replays_it_once_known():
    org = with_auto_reply(make_org())
    response = post_twilio(SMS_PATH, sms(To=UNKNOWN_NUMBER))
    # 200 on purpose: the delivery is kept for replay_webhooks.
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts) == ("failed", 1)
    assert event.error == (
        f"leads.services.sms.UnknownNumber: no organization answers on {UNKNOWN_NUMBER}"
    )
    assert (Lead.objects.count(), Conversation.objects.count(), Message.objects.count()) == (
        0,
        0,
        0,
    )

    add_number(org, UNKNOWN_NUMBER)
    call_command("replay_webhooks", stdout=StringIO())
    event.refresh_from_db()
    assert (event.status, event.error, event.attempts) == ("processed", "", 2)
    customer, agent = Message.objects.order_by("id")
    assert (customer.role, customer.provider_message_id, customer.lead.phone) == (
        "customer",
        SID,
        CALLER,
    )
    assert (agent.role, agent.body) == ("agent", AUTO_REPLY)

    before = stored()
    call_command("replay_webhooks", stdout=StringIO())
    assert stored() == before
    event.refresh_from_db()
    assert (event.status, event.attempts, event.duplicates) == ("processed", 2, 0)


def test_it_processes_a_failed_delivery_again_when_twilio_retries_it():
    org = with_auto_reply(make_org())
    post_twilio(SMS_PATH, sms(To=UNKNOWN_NUMBER))
    add_number(org, UNKNOWN_NUMBER)
    response = post_twilio(SMS_PATH, sms(To=UNKNOWN_NUMBER))
    assert response.status_code == 200
    assert response.content.decode() == AUTO_REPLY_TWIML
    event = WebhookEvent.objects.get()
    assert (event.status, event.error, event.attempts, event.duplicates) == ("processed", "", 2, 0)
    assert list(Message.objects.order_by("id").values_list("role", flat=True)) == [
        "customer",
        "agent",
    ]


def test_it_changes_nothing_when_a_processed_delivery_is_replayed():
    with_auto_reply(make_org())
    post_twilio(SMS_PATH, sms())
    event = WebhookEvent.objects.get()
    before = stored()
    out = StringIO()
    call_command("replay_webhooks", "--id", str(event.pk), stdout=out)
    assert out.getvalue() == "0 failed deliveries\n"
    assert stored() == before
    event.refresh_from_db()
    assert (event.status, event.attempts, event.duplicates) == ("processed", 1, 0)


def test_it_answers_a_duplicate_delivery_without_storing_or_replying_again():
    with_auto_reply(make_org())
    first = post_twilio(SMS_PATH, sms())
    assert first.content.decode() == AUTO_REPLY_TWIML
    before = stored()
    again = post_twilio(SMS_PATH, sms())
    assert again.status_code == 200
    assert again.content.decode() == EMPTY_TWIML
    assert stored() == before
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts, event.duplicates) == ("processed", 1, 1)


def test_it_dedupes_on_the_idempotency_token_even_with_another_message_sid():
    with_auto_reply(make_org())
    token = {"I-Twilio-Idempotency-Token": "a8f3c2e1-1f0b-4c6e-9a57-2d1e0f9b7c33"}
    first = post_twilio(SMS_PATH, sms(), headers=token)
    assert first.content.decode() == AUTO_REPLY_TWIML
    before = stored()
    other_sid = sms(MessageSid="SM0000000000000000000000000000002b", Body="Hello again")
    again = post_twilio(SMS_PATH, other_sid, headers=token)
    assert again.status_code == 200
    assert again.content.decode() == EMPTY_TWIML
    assert stored() == before
    event = WebhookEvent.objects.get()
    assert event.idempotency_key == token["I-Twilio-Idempotency-Token"]
    assert (event.status, event.duplicates, event.payload["MessageSid"]) == ("processed", 1, SID)


def test_it_treats_a_stored_message_sid_under_a_new_idempotency_token_as_received():
    make_org()
    post_twilio(SMS_PATH, sms(), headers={"I-Twilio-Idempotency-Token": "token-1"})
    before = stored()
    response = post_twilio(SMS_PATH, sms(), headers={"I-Twilio-Idempotency-Token": "token-2"})
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    after = stored()
    assert {k: after[k] for k in ("leads", "conversations", "messages")} == {
        k: before[k] for k in ("leads", "conversations", "messages")
    }
    assert list(WebhookEvent.objects.filter(status="failed").values_list("error")) == []
    call_command("replay_webhooks", stdout=StringIO())


def test_it_ignores_a_text_from_a_sender_that_is_not_a_phone_number():
    with_auto_reply(make_org())
    response = post_twilio(SMS_PATH, sms(From="anonymous"))
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts) == ("ignored", 1)
    assert event.error == (
        "not a phone number: 'anonymous' contains characters a phone number cannot have"
    )
    assert (Lead.objects.count(), Conversation.objects.count(), Message.objects.count()) == (
        0,
        0,
        0,
    )


def test_it_publishes_the_new_message_to_the_dashboard():
    make_org()
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(DASHBOARD_GROUP, channel)
    try:
        post_twilio(SMS_PATH, sms())
        published = async_to_sync(asyncio.wait_for)(layer.receive(channel), timeout=5)
    finally:
        async_to_sync(layer.group_discard)(DASHBOARD_GROUP, channel)
    message = Message.objects.get()
    assert published == {
        "type": "dashboard.event",
        "event": "lead.message",
        "payload": {
            "lead_id": message.lead_id,
            "conversation_id": message.conversation_id,
            "id": message.id,
            "role": "customer",
            "body": "Do you have e-bikes in stock?",
            "channel": "sms",
        },
    }


# --- every cache mode -------------------------------------------------------------------------


def test_it_stores_the_same_text_for_a_new_caller_in_every_cache_mode(mode):
    with_auto_reply(make_org())
    warm = services.call_context(ORG_NUMBER, CALLER)
    assert warm["lead"] is None
    response = post_twilio(SMS_PATH, sms())
    assert (response.status_code, response["Content-Type"]) == (200, "text/xml")
    assert response.content.decode() == AUTO_REPLY_TWIML
    assert WebhookEvent.objects.get().status == "processed"
    assert list(Lead.objects.values_list("phone", flat=True)) == [CALLER]
    assert list(Conversation.objects.values_list("channel", "status")) == [("sms", "active")]
    assert list(Message.objects.order_by("id").values_list("role", "body", "delivery_status")) == [
        ("customer", "Do you have e-bikes in stock?", "received"),
        ("agent", AUTO_REPLY, "queued"),
    ]
    context = services.call_context(ORG_NUMBER, CALLER)
    assert context["lead"]["phone"] == CALLER
    assert [(m["role"], m["body"], m["channel"]) for m in context["recent_messages"]] == [
        ("customer", "Do you have e-bikes in stock?", "sms"),
        ("agent", AUTO_REPLY, "sms"),
    ]
    assert context["conversation_count"] == 1
    assert services.find_or_create_lead(Organization.objects.get().id, CALLER)[1] is False


def test_it_shows_the_text_in_the_next_context_read_for_a_known_caller_in_every_mode(mode):
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    call = services.open_conversation(lead["id"], "voice", provider_id="conv-1")
    services.add_message(call.id, "customer", "Do you rent bikes?")
    services.complete_conversation(call.id, summary="Asked about rentals.")
    warm = services.call_context(ORG_NUMBER, CALLER)
    assert [m["body"] for m in warm["recent_messages"]] == ["Do you rent bikes?"]
    assert services.call_context(ORG_NUMBER, CALLER) == warm

    response = post_twilio(SMS_PATH, sms(Body="Is the blue one in stock?"))
    assert response.content.decode() == EMPTY_TWIML
    context = services.call_context(ORG_NUMBER, CALLER)
    assert [(m["body"], m["channel"]) for m in context["recent_messages"]] == [
        ("Do you rent bikes?", "voice"),
        ("Is the blue one in stock?", "sms"),
    ]
    assert context["conversation_count"] == 2
    assert context["latest_summary"] == "Asked about rentals."
    assert (
        context["lead"]["last_contact_at"]
        == Message.objects.get(provider_message_id=SID).created_at
    )


def test_it_stores_a_text_with_a_nul_character_instead_of_failing_on_it():
    """PostgreSQL stores no NUL in text or jsonb: it was a DataError, a 503, and Twilio
    retrying for ever. The character is replaced; the text is kept."""
    make_org()

    response = post_twilio(SMS_PATH, sms(Body="e-bikes\x00 in stock?"))

    assert response.status_code == 200
    assert Message.objects.get().body == "e-bikes\ufffd in stock?"
    assert WebhookEvent.objects.get().payload["Body"] == "e-bikes\ufffd in stock?"
