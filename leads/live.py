"""Live updates of what open pages show: once a write's transaction commits, the dashboards
hear of it (monitoring.events). Sent from the model layer, so every write path publishes —
webhooks, `replay_webhooks`, the deferred recorder, status callbacks, the admin — and views
publish nothing. Events: `lead.message` (a message added or changed: the lead's timeline) and
`call.updated` (a voice conversation opened, completed or failed)."""

from functools import partial

from django.db import transaction
from django.db.models.signals import post_save

from leads.models import Conversation, Message, rows_changed
from monitoring import events


def _after_commit(event_type: str, payload: dict) -> None:
    transaction.on_commit(partial(events.publish, event_type, payload), robust=True)


def message_payload(message: Message) -> dict:
    channel = message.conversation.channel if Message.conversation.is_cached(message) else None
    return {
        "lead_id": message.lead_id,
        "conversation_id": message.conversation_id,
        "id": message.id,
        "role": message.role,
        "body": message.body,
        "channel": channel,
    }


def _message_saved(sender, instance: Message, **kwargs) -> None:
    _after_commit("lead.message", message_payload(instance))


def _call_saved(sender, instance: Conversation, **kwargs) -> None:
    if instance.channel == Conversation.Channel.VOICE:
        _after_commit("call.updated", call_payload(instance))


def call_payload(conversation: Conversation) -> dict:
    return {
        "conversation_id": conversation.provider_id,
        "id": conversation.id,
        "lead_id": conversation.lead_id,
        "status": conversation.status,
    }


def _rows_changed(sender, before, after, changes, **kwargs) -> None:
    """Bulk writes (a transcript's turns, a batch of calls): one event per lead."""
    leads = {row["lead_id"] for row in before} | {obj.lead_id for obj in after}
    event_type = "lead.message" if sender is Message else "call.updated"
    for lead_id in sorted(lead for lead in leads if lead is not None):
        _after_commit(event_type, {"lead_id": lead_id})


def connect() -> None:
    post_save.connect(_message_saved, sender=Message, dispatch_uid="live-message")
    post_save.connect(_call_saved, sender=Conversation, dispatch_uid="live-call")
    for model in (Message, Conversation):
        rows_changed.connect(_rows_changed, sender=model, dispatch_uid=f"live-rows-{model}")
