"""Every write that changes what an open page shows reaches the dashboards once its
transaction commits, whatever path it took; a rolled-back write publishes nothing; the views
publish nothing themselves."""

import asyncio
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings

from leads import services
from leads.models import Conversation, Message, WebhookEvent
from leads.webhooks.initiation_records import record_initiations
from monitoring.events import DASHBOARD_GROUP
from tests.factories import CALLER, make_org

pytestmark = pytest.mark.django_db(transaction=True)
STARTED = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@contextmanager
def listening():
    """A member of the dashboard group; yields a function returning what it heard."""
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=layers):
        from channels.layers import channel_layers

        channel_layers.backends.clear()
        layer = get_channel_layer()
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(DASHBOARD_GROUP, channel)

        def heard() -> list[tuple[str, dict]]:
            async def drain():
                got = []
                while True:
                    try:
                        message = await asyncio.wait_for(layer.receive(channel), timeout=0.2)
                    except TimeoutError:
                        return got
                    got.append((message["event"], message["payload"]))

            return async_to_sync(drain)()

        try:
            yield heard
        finally:
            channel_layers.backends.clear()


@pytest.fixture
def lead():
    org = make_org()
    return services.find_or_create_lead(org.id, CALLER)[0]


def test_it_publishes_a_message_added_by_a_service(lead):
    thread = services.open_conversation(lead["id"], "sms", status="active")
    with listening() as heard:
        message = services.add_message(thread.id, "staff", "We open at nine.")
        events = heard()
    assert events == [
        (
            "lead.message",
            {
                "lead_id": lead["id"],
                "conversation_id": thread.id,
                "id": message.id,
                "role": "staff",
                "body": "We open at nine.",
                "channel": "sms",
            },
        )
    ]


def test_it_publishes_a_delivery_status_callback(lead):
    thread = services.open_conversation(lead["id"], "sms", status="active")
    message = services.add_message(
        thread.id, "agent", "Hi!", provider_message_id="SM1", delivery_status="queued"
    )
    from leads.services import sms

    with listening() as heard:
        sms.update_delivery_status("SM1", "delivered")
        events = heard()
    assert [(name, payload["id"]) for name, payload in events] == [("lead.message", message.id)]


def test_it_publishes_the_calls_the_deferred_recorder_opens(lead):
    calls = [(lead["organization_id"], CALLER, lead["id"], {"call_sid": "CA9"}, STARTED)]
    with listening() as heard:
        record_initiations(calls)
        events = heard()
    assert events == [("call.updated", {"lead_id": lead["id"]})]
    assert Conversation.objects.get().call_sid == "CA9"


def test_it_publishes_a_message_edited_in_the_admin(lead, admin_client):
    thread = services.open_conversation(lead["id"], "sms", status="active")
    message = services.add_message(thread.id, "agent", "Typo hree")
    with listening() as heard:
        response = admin_client.post(
            f"/admin/leads/message/{message.pk}/change/",
            {
                "conversation": thread.pk,
                "lead": lead["id"],
                "role": "agent",
                "body": "Typo here",
                "delivery_status": "",
                "delivery_error": "",
                "created_at_0": message.created_at.strftime("%Y-%m-%d"),
                "created_at_1": message.created_at.strftime("%H:%M:%S"),
                "_save": "Save",
            },
        )
        events = heard()
    assert response.status_code == 302
    assert [(name, payload["body"]) for name, payload in events] == [("lead.message", "Typo here")]


def test_it_publishes_a_replayed_delivery(lead):
    org_number = "+15550000001"
    event = WebhookEvent.objects.create(
        provider="twilio",
        event_type="sms",
        idempotency_key="SMreplay",
        payload={"MessageSid": "SMreplay", "From": CALLER, "To": org_number, "Body": "again"},
        status=WebhookEvent.Status.FAILED,
        attempts=1,
    )
    with listening() as heard:
        call_command("replay_webhooks", "--id", str(event.pk))
        events = heard()
    assert [(name, payload["body"]) for name, payload in events] == [("lead.message", "again")]


def test_it_publishes_nothing_for_a_write_that_rolls_back(lead):
    thread = services.open_conversation(lead["id"], "sms", status="active")
    with listening() as heard:
        with pytest.raises(RuntimeError), transaction.atomic():
            services.add_message(thread.id, "staff", "never sent")
            raise RuntimeError("rolled back")
        events = heard()
    assert events == []
    assert not Message.objects.filter(body="never sent").exists()
