"""Text messages: inbound texts join the customer's open SMS thread; status callbacks move an
outbound message's delivery status forward only."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from leads.models import Conversation, Message
from leads.services.reads import organization_for_number
from leads.services.writes import add_message, find_or_create_lead

# A text within this long of the thread's last message continues it; later ones start a new one.
THREAD_WINDOW = timedelta(hours=24)

# Twilio's message statuses by how far along they are; a callback never moves a message back.
DELIVERY_PROGRESS = {
    "accepted": 1,
    "scheduled": 1,
    "queued": 1,
    "sending": 2,
    "receiving": 2,
    "sent": 3,
    "received": 3,
    "partially_delivered": 4,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "canceled": 5,
    "read": 6,
}


class UnknownNumber(Exception):
    """No organization answers on the number a text was sent to."""


class AlreadyReceived(Exception):
    """A text with this MessageSid is stored already (delivered again under another id)."""


def receive_text(to: str, sender: str, body: str, message_sid: str) -> tuple[Message, str]:
    """Store an inbound text; returns it and the organization's automatic reply ("" if none)."""
    if Message.objects.filter(provider_message_id=message_sid).exists():
        raise AlreadyReceived(f"text {message_sid} is stored already")
    org = organization_for_number(to)
    if org is None:
        raise UnknownNumber(f"no organization answers on {to}")
    lead, _ = find_or_create_lead(org["id"], sender)
    with transaction.atomic():
        thread = open_thread(lead["id"])
        message = add_message(
            thread.id,
            Message.Role.CUSTOMER,
            body,
            provider_message_id=message_sid,
            delivery_status="received",
        )
        reply = org.get("sms_auto_reply", "")
        if reply:
            add_message(thread.id, Message.Role.AGENT, reply, delivery_status="queued")
    return message, reply


def open_thread(lead_id: int) -> Conversation:
    """The lead's SMS conversation still in progress, or a new one."""
    latest = (
        Conversation.objects.select_for_update()
        .filter(
            lead_id=lead_id, channel=Conversation.Channel.SMS, status=Conversation.Status.ACTIVE
        )
        .order_by("-started_at")
        .first()
    )
    now = timezone.now()
    if latest is not None:
        last = latest.messages.order_by("-created_at").values_list("created_at", flat=True).first()
        if now - (last or latest.started_at) <= THREAD_WINDOW:
            return latest
        latest.status = Conversation.Status.COMPLETED
        latest.ended_at = last or latest.started_at
        latest.save(update_fields=["status", "ended_at"])
    return Conversation.objects.create(
        lead_id=lead_id,
        channel=Conversation.Channel.SMS,
        status=Conversation.Status.ACTIVE,
        started_at=now,
    )


def update_delivery_status(message_sid: str, status: str, error_code: str = "") -> Message | None:
    """Apply a status callback; None when no message has that SID. Repeated or late callbacks
    keep the furthest status."""
    status = status.lower()
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .select_related("lead")
            .filter(provider_message_id=message_sid)
            .first()
        )
        if message is None:
            return None
        current = DELIVERY_PROGRESS.get(message.delivery_status, 0)
        if DELIVERY_PROGRESS.get(status, 0) > current:
            message.delivery_status = status
            message.delivery_error = error_code
            message.save(update_fields=["delivery_status", "delivery_error"])
    return message
