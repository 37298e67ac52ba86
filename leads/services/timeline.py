"""A lead's page: its details and its conversations with every message, read through the cache
gate (namespace "timeline", keyed by lead id, stale after any write to the lead or to an
organization)."""

from leads.models import Conversation, Lead, Message
from leads.services.cache_keys import ORGS_SCOPE, TIMELINE, lead_scope
from leads.services.snapshots import (
    conversation_snapshot,
    lead_snapshot,
    message_snapshot,
    organization_snapshot,
)
from monitoring.cache import gate

# A lead's page shows this many of its most recent conversations (calls and SMS threads).
TIMELINE_CONVERSATIONS = 50


def lead_timeline(lead_id: int) -> dict | None:
    """The lead, its organization, and its latest conversations with their messages, all oldest
    first; None when there is no such lead."""
    return gate.get_or_load(
        TIMELINE,
        str(lead_id),
        lambda: _load_timeline(lead_id),
        scopes=[ORGS_SCOPE, lead_scope(lead_id)],
    )


def _load_timeline(lead_id: int) -> dict | None:
    lead = Lead.objects.select_related("organization").filter(pk=lead_id).first()
    if lead is None:
        return None
    recent = list(
        Conversation.objects.filter(lead=lead).order_by("-started_at", "-id")[
            :TIMELINE_CONVERSATIONS
        ]
    )
    messages = _messages_by_conversation([c.id for c in recent])
    count = len(recent)
    if count == TIMELINE_CONVERSATIONS:
        count = Conversation.objects.filter(lead=lead).count()
    return {
        "lead": lead_snapshot(lead),
        "organization": organization_snapshot(lead.organization),
        "conversation_count": count,
        "conversations": [
            {**conversation_snapshot(c), "messages": messages.get(c.id, [])}
            for c in reversed(recent)
        ],
    }


def _messages_by_conversation(conversation_ids: list[int]) -> dict[int, list[dict]]:
    rows = (
        Message.objects.filter(conversation_id__in=conversation_ids)
        .select_related("conversation")
        .order_by("created_at", "id")
    )
    by_conversation: dict[int, list[dict]] = {}
    for message in rows:
        by_conversation.setdefault(message.conversation_id, []).append(message_snapshot(message))
    return by_conversation
