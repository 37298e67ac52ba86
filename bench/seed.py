"""Rows the scenarios read, written straight to the (throwaway) bench database."""

from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from leads.models import Conversation, Lead, Message, Organization, PhoneNumber

ORG_NUMBER = "+15550100000"
CALLER = "+15550123456"


@dataclass(frozen=True)
class Caller:
    org_number: str
    phone: str
    lead_id: int


def caller_with_history(conversations: int = 5, messages_each: int = 4) -> Caller:
    """An organization, and a caller with `conversations` past conversations (summarized) of
    `messages_each` messages each: 20 messages by default."""
    org = Organization.objects.create(
        name="Bench Plumbing",
        address="1 Bench Street",
        timezone="America/New_York",
        business_hours={day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
    )
    PhoneNumber.objects.create(organization=org, e164=ORG_NUMBER, label="main")
    start = timezone.now() - timedelta(days=conversations)
    lead = Lead.objects.create(
        organization=org,
        phone=CALLER,
        name="Casey Caller",
        status=Lead.Status.QUALIFIED,
        interest={"service": "boiler repair", "budget": "500-1000"},
        qualification={"owner": True, "timeline": "this week"},
        last_contact_at=start + timedelta(days=conversations - 1),
    )
    for n in range(conversations):
        _conversation(lead, n, start + timedelta(days=n), messages_each)
    return Caller(ORG_NUMBER, CALLER, lead.id)


def _conversation(lead: Lead, n: int, started_at, messages: int) -> None:
    conversation = Conversation.objects.create(
        lead=lead,
        channel=Conversation.Channel.VOICE if n % 2 else Conversation.Channel.SMS,
        provider_id=f"bench-conversation-{n}",
        status=Conversation.Status.COMPLETED,
        started_at=started_at,
        ended_at=started_at + timedelta(minutes=4),
        duration_seconds=240,
        title=f"Boiler follow-up {n}",
        summary=f"Conversation {n}: the caller asked about a boiler repair and a quote.",
    )
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            lead=lead,
            role=Message.Role.CUSTOMER if i % 2 == 0 else Message.Role.AGENT,
            body=f"Message {i} of conversation {n}: when can a technician come by?",
            created_at=started_at + timedelta(seconds=30 * i),
        )
        for i in range(messages)
    )
