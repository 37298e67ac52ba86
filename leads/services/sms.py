"""Text messages: inbound texts join the customer's open SMS thread; status callbacks move an
outbound message's delivery status forward only."""

from datetime import timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from leads.models import Conversation, Lead, Message
from leads.services import consent
from leads.services.reads import organization_for_number
from leads.services.writes import add_message, lead_id_for

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
    """Store an inbound text; returns it and the organization's automatic reply ("" if none).
    A known caller with a thread in progress costs one query (thread, lead, last message time
    and whether the text is stored already, the rows locked) and the writes."""
    org = organization_for_number(to)
    if org is None:
        raise UnknownNumber(f"no organization answers on {to}")
    lead_id = lead_id_for(org["id"], sender)
    with transaction.atomic(savepoint=False):
        thread = open_thread(lead_id, message_sid)
        if thread is None:
            message = reply = None
        else:
            message, reply = _store_text(org, thread, body, message_sid)
    if message is None:  # raised out here: an exception inside would doom the transaction
        raise AlreadyReceived(f"text {message_sid} is stored already")
    return message, reply


def _store_text(org: dict, thread: Conversation, body: str, message_sid: str):
    message = add_message(
        thread,
        Message.Role.CUSTOMER,
        body,
        provider_message_id=message_sid,
        delivery_status="received",
    )
    reply = _reply_to(org, thread.lead, consent.keyword(body))
    if reply:
        add_message(thread, Message.Role.AGENT, reply, delivery_status="queued")
    return message, reply


def _reply_to(org: dict, lead: Lead, keyword: tuple[str, str] | None) -> str:
    """What to answer: the help text to HELP (carriers require it, opted out or not), nothing
    to STOP or START (Twilio confirms those itself), and to any other text the automatic reply,
    never to a number that opted out."""
    kind = keyword[0] if keyword else None
    if kind == "opt_out" and lead.sms_opted_out_at is None:
        lead.sms_opted_out_at, lead.sms_opt_out_keyword = timezone.now(), keyword[1]
        lead.save(update_fields=["sms_opted_out_at", "sms_opt_out_keyword", "updated_at"])
    elif kind == "opt_in" and lead.sms_opted_out_at is not None:
        lead.sms_opted_out_at, lead.sms_opt_out_keyword = None, ""
        lead.save(update_fields=["sms_opted_out_at", "sms_opt_out_keyword", "updated_at"])
    if kind == "help":
        return consent.help_text(org)
    if kind is not None or lead.sms_opted_out_at is not None:
        return ""
    return org.get("sms_auto_reply", "")


def open_thread(lead_id: int, message_sid: str | None = None) -> Conversation | None:
    """The lead's SMS conversation still in progress, or a new one (its lead loaded and locked);
    None, with nothing written, when a text with `message_sid` is stored already."""
    latest = (
        Conversation.objects.select_for_update()
        .select_related("lead")
        .filter(
            lead_id=lead_id, channel=Conversation.Channel.SMS, status=Conversation.Status.ACTIVE
        )
        .annotate(last_message_at=_last_message_at(), **_stored_already(message_sid))
        .order_by("-started_at")
        .first()
    )
    if latest is not None and getattr(latest, "stored_already", False):
        return None
    if latest is None and message_sid:
        if Message.objects.filter(provider_message_id=message_sid).exists():
            return None
    now = timezone.now()
    if latest is not None:
        last = latest.last_message_at
        if now - (last or latest.started_at) <= THREAD_WINDOW:
            return latest
        latest.status = Conversation.Status.COMPLETED
        latest.ended_at = last or latest.started_at
        latest.save(update_fields=["status", "ended_at"])
    lead = latest.lead if latest is not None else Lead.objects.select_for_update().get(pk=lead_id)
    return Conversation.objects.create(
        lead=lead,
        channel=Conversation.Channel.SMS,
        status=Conversation.Status.ACTIVE,
        started_at=now,
    )


def _last_message_at() -> Subquery:
    return Subquery(
        Message.objects.filter(conversation=OuterRef("pk"))
        .order_by("-created_at")
        .values("created_at")[:1]
    )


def _stored_already(message_sid: str | None) -> dict:
    if not message_sid:
        return {}
    return {"stored_already": Exists(Message.objects.filter(provider_message_id=message_sid))}


def update_delivery_status(message_sid: str, status: str, error_code: str = "") -> Message | None:
    """Apply a status callback; None when no message has that SID. Repeated or late callbacks
    keep the furthest status."""
    status = status.lower()
    with transaction.atomic(savepoint=False):
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
