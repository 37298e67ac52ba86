"""Writes: each runs in a transaction; once it commits, what it changed is invalidated (by the
model layer, see leads.invalidation, like every other write path)."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from leads.models import Conversation, Lead, Message
from leads.phones import normalize_phone
from leads.services.reads import cached_lead
from leads.services.snapshots import lead_snapshot

LEAD_FIELDS = {"name", "status", "interest", "qualification", "sentiment", "last_contact_at"}
CONVERSATION_RESULT_FIELDS = {"title", "summary", "classification", "analysis"}


def find_or_create_lead(organization_id: int, phone: str) -> tuple[dict, bool]:
    """The organization's lead for `phone` (any format), created if new: (lead, created)."""
    phone = normalize_phone(phone)
    found = cached_lead(organization_id, phone)
    if found is not None:
        return found, False
    lead, created = Lead.objects.get_or_create(organization_id=organization_id, phone=phone)
    return lead_snapshot(lead), created


def lead_id_for(organization_id: int, phone: str) -> int:
    """The id of the organization's lead for `phone` (any format), created if new: a cached
    lookup, else one upsert (no read before it, no savepoint: a concurrent creation of the
    same lead is the conflict it resolves)."""
    phone = normalize_phone(phone)
    found = cached_lead(organization_id, phone)
    if found is not None:
        return found["id"]
    (lead,) = Lead.objects.bulk_create(
        [Lead(organization_id=organization_id, phone=phone)],
        update_conflicts=True,
        unique_fields=["organization", "phone"],
        update_fields=["phone"],
    )
    return lead.id


def update_lead(lead_id: int, **changes) -> Lead:
    unknown = set(changes) - LEAD_FIELDS
    if unknown:
        raise TypeError(f"update_lead cannot change {', '.join(sorted(unknown))}")
    with transaction.atomic():
        lead = Lead.objects.select_for_update().get(pk=lead_id)
        for name, value in changes.items():
            setattr(lead, name, value)
        lead.full_clean(validate_unique=False, validate_constraints=False)
        lead.save(update_fields=[*changes, "updated_at"])
    return lead


def open_conversation(
    lead_id: int,
    channel: str,
    *,
    provider_id: str | None = None,
    status: str = Conversation.Status.INITIATED,
    started_at: datetime | None = None,
) -> Conversation:
    with transaction.atomic():
        lead = Lead.objects.get(pk=lead_id)
        conversation = Conversation.objects.create(
            lead=lead,
            channel=channel,
            provider_id=provider_id,
            status=status,
            started_at=started_at or timezone.now(),
        )
    return conversation


def complete_conversation(
    conversation_id: int,
    *,
    ended_at: datetime | None = None,
    duration_seconds: int | None = None,
    status: str = Conversation.Status.COMPLETED,
    **results,
) -> Conversation:
    unknown = set(results) - CONVERSATION_RESULT_FIELDS
    if unknown:
        raise TypeError(f"complete_conversation cannot set {', '.join(sorted(unknown))}")
    with transaction.atomic():
        conversation = (
            Conversation.objects.select_for_update().select_related("lead").get(pk=conversation_id)
        )
        conversation.status = status
        conversation.ended_at = ended_at or timezone.now()
        if duration_seconds is None:
            elapsed = conversation.ended_at - conversation.started_at
            duration_seconds = max(0, int(elapsed.total_seconds()))
        conversation.duration_seconds = duration_seconds
        for name, value in results.items():
            setattr(conversation, name, value)
        conversation.save()
    return conversation


def add_message(
    conversation: int | Conversation,
    role: str,
    body: str,
    *,
    provider_message_id: str | None = None,
    delivery_status: str = "",
    created_at: datetime | None = None,
) -> Message:
    """Append a message to a conversation (its id, or the row loaded with its lead: then
    nothing is read); a customer's or agent's message is a contact."""
    with transaction.atomic(savepoint=False):
        if not isinstance(conversation, Conversation) or not Conversation.lead.is_cached(
            conversation
        ):
            conversation_id = getattr(conversation, "pk", conversation)
            conversation = Conversation.objects.select_related("lead").get(pk=conversation_id)
        lead = conversation.lead
        message = Message.objects.create(
            conversation=conversation,
            lead=lead,
            role=role,
            body=body,
            provider_message_id=provider_message_id,
            delivery_status=delivery_status,
            created_at=created_at or timezone.now(),
        )
        if role != Message.Role.SYSTEM and (
            lead.last_contact_at is None or message.created_at > lead.last_contact_at
        ):
            lead.last_contact_at = message.created_at
            lead.save(update_fields=["last_contact_at", "updated_at"])
    return message
