"""`demo seed`: the demo organization and its leads with their history, written through the
services (so every write invalidates what it affects, as a real one does). Idempotent: a lead
that exists already is left as it is."""

from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from leads import services
from leads.demo import data
from leads.models import Conversation, Lead, Message, Organization, PhoneNumber
from monitoring.cache import gate


class NumberTaken(Exception):
    """The demo number belongs to another organization."""


@dataclass(frozen=True)
class Seeded:
    organization: Organization
    organization_created: bool
    leads_created: int
    leads: int
    conversations: int
    messages: int


def seed(count: int, on_lead: Callable[[], None] = lambda: None) -> Seeded:
    organization, created = demo_organization()
    now = timezone.now()
    new = 0
    for index in range(count):
        new += seed_lead(organization, index, now)
        on_lead()
    leads = Lead.objects.filter(organization=organization)
    return Seeded(
        organization,
        created,
        new,
        leads.count(),
        Conversation.objects.filter(lead__in=leads).count(),
        Message.objects.filter(lead__in=leads).count(),
    )


def demo_organization() -> tuple[Organization, bool]:
    """The demo organization and its number, made if missing: (organization, made now)."""
    with transaction.atomic():
        organization, created = Organization.objects.get_or_create(
            name=data.ORGANIZATION,
            defaults={
                "address": data.ADDRESS,
                "timezone": data.TIMEZONE,
                "business_hours": data.BUSINESS_HOURS,
                "sms_auto_reply": data.SMS_AUTO_REPLY,
            },
        )
        number = PhoneNumber.objects.filter(e164=data.NUMBER).first()
        if number is not None and number.organization_id != organization.id:
            raise NumberTaken(f"{data.NUMBER} already belongs to {number.organization}")
        if number is None:
            PhoneNumber.objects.create(
                organization=organization, e164=data.NUMBER, label="demo line"
            )
            created = True
    if created:
        # As the admin does: "no organization answers on this number" may be cached.
        gate.flush(actor="demo seed", reason=f"{data.ORGANIZATION} created", source="cli")
    return organization, created


def seed_lead(organization: Organization, index: int, now) -> bool:
    """Lead `index` with its history; False if it exists already."""
    plan = data.lead_plan(index, now)
    if Lead.objects.filter(organization=organization, phone=plan.phone).exists():
        return False
    with transaction.atomic():
        lead, _ = services.find_or_create_lead(organization.id, plan.phone)
        for conversation in plan.conversations:
            _write_conversation(lead["id"], conversation)
        services.update_lead(
            lead["id"],
            name=plan.name,
            status=plan.status,
            interest={"bike_interest": plan.bike, "budget": plan.budget},
            sentiment=plan.sentiment,
        )
    return True


def _write_conversation(lead_id: int, plan: data.ConversationPlan) -> None:
    conversation = services.open_conversation(
        lead_id, plan.channel, status=Conversation.Status.ACTIVE, started_at=plan.started_at
    )
    for role, body, created_at in plan.lines:
        status = (
            ("received" if role == "customer" else "delivered") if plan.channel == "sms" else ""
        )
        services.add_message(
            conversation.id, role, body, created_at=created_at, delivery_status=status
        )
    services.complete_conversation(
        conversation.id, ended_at=plan.lines[-1][2], title=plan.title, summary=plan.summary
    )
