"""Reads, every one through the cache gate. Each entry names the scopes it depends on (see
cache_keys): a write to any of them makes it stale."""

from django.conf import settings
from django.db.models import Count, F, Max, Q

import leads.services.cache_keys as cache_keys
from leads.models import Conversation, Lead, Message, Organization
from leads.phones import normalize_phone
from leads.services.cache_keys import (
    COUNTS,
    COUNTS_SCOPE,
    CTX,
    LEAD,
    LEADS,
    LISTS_SCOPE,
    ORG,
    ORGS_SCOPE,
    phone_scope,
)
from leads.services.snapshots import lead_snapshot, message_snapshot, organization_snapshot
from monitoring.cache import gate


def organization_for_number(number: str) -> dict | None:
    """The organization answering on `number` (any format), or None."""
    number = normalize_phone(number)
    return gate.get_or_load(ORG, number, lambda: _load_organization(number), scopes=[ORGS_SCOPE])


def _load_organization(number: str) -> dict | None:
    org = Organization.objects.filter(numbers__e164=number).first()
    return organization_snapshot(org) if org else None


def lead_scopes_of(phone: str) -> list[str]:
    return [phone_scope(phone)]


def context_scopes_of(phone: str) -> list[str]:
    return [ORGS_SCOPE, phone_scope(phone)]


def cached_lead(organization_id: int, phone: str) -> dict | None:
    """The organization's lead for `phone` (E.164), or None."""
    key = cache_keys.lead_key(organization_id, phone)
    return gate.get_or_load(
        LEAD, key, lambda: load_lead(organization_id, phone), scopes=lead_scopes_of(phone)
    )


def load_lead(organization_id: int, phone: str) -> dict | None:
    lead = Lead.objects.filter(organization_id=organization_id, phone=phone).first()
    return lead_snapshot(lead) if lead else None


def call_context(org_number: str, phone: str) -> dict:
    """Everything a call needs about the caller, as one cached bundle: the organization that
    answers on `org_number`, the caller's lead (None if new), their last messages (oldest
    first), the latest conversation summary and the number of conversations."""
    return gate.get_or_load(*_call_context_entry(org_number, phone))


async def acall_context(org_number: str, phone: str) -> dict:
    """`call_context` for a caller on the event loop: a warm entry costs no thread."""
    return await gate.aget_or_load(*_call_context_entry(org_number, phone))


def _call_context_entry(org_number: str, phone: str) -> tuple:
    org_number, phone = normalize_phone(org_number), normalize_phone(phone)
    key = cache_keys.context_key(org_number, phone)
    loader = lambda: load_call_context(org_number, phone)  # noqa: E731
    return CTX, key, loader, None, context_scopes_of(phone)


def load_call_context(org_number: str, phone: str) -> dict:
    org = Organization.objects.filter(numbers__e164=org_number).first()
    lead = Lead.objects.filter(organization=org, phone=phone).first() if org else None
    context = {
        "organization": organization_snapshot(org) if org else None,
        "lead": lead_snapshot(lead) if lead else None,
        "recent_messages": [],
        "latest_summary": "",
        "latest_title": "",
        "conversation_count": 0,
        "last_conversation_at": None,
    }
    if lead is None:
        return context
    messages = (
        Message.objects.filter(lead=lead)
        .select_related("conversation")
        .order_by("-created_at", "-id")[: settings.CALL_CONTEXT_MESSAGES]
    )
    context["recent_messages"] = [message_snapshot(m) for m in reversed(messages)]
    # A call still ringing in (initiated) is not a previous conversation of the caller.
    previous = Conversation.objects.filter(lead=lead).exclude(
        channel=Conversation.Channel.VOICE, status=Conversation.Status.INITIATED
    )
    stats = previous.aggregate(count=Count("id"), last=Max("started_at"))
    context["conversation_count"] = stats["count"]
    context["last_conversation_at"] = stats["last"]
    summarized = (
        Conversation.objects.filter(lead=lead)
        .exclude(summary="")
        .order_by("-started_at", "-id")
        .values("summary", "title")
        .first()
    )
    if summarized:
        context["latest_summary"] = summarized["summary"]
        context["latest_title"] = summarized["title"]
    return context


# Pages past the last one show the last; numbers beyond this are not even looked at.
MAX_PAGE = 100_000


def lead_list(
    organization_id: int | None = None,
    search: str = "",
    status: str = "",
    page: int = 1,
    per_page: int = 25,
) -> dict:
    """One page of leads, most recently contacted first, filtered by name/phone and status."""
    search, per_page = search.strip(), min(max(1, per_page), 200)
    page = min(max(1, page), MAX_PAGE)
    key = cache_keys.variant_key(
        org=organization_id, search=search, status=status, page=page, per_page=per_page
    )
    return gate.get_or_load(
        LEADS,
        key,
        lambda: _load_lead_list(organization_id, search, status, page, per_page),
        scopes=[LISTS_SCOPE],
    )


def _load_lead_list(organization_id, search, status, page, per_page) -> dict:
    leads = Lead.objects.all()
    if organization_id is not None:
        leads = leads.filter(organization_id=organization_id)
    if status:
        leads = leads.filter(status=status)
    if search:
        leads = leads.filter(_search_filter(search))
    total = leads.count()
    page = min(page, max(1, -(-total // per_page)))  # past the end: the last page
    start = (page - 1) * per_page
    rows = leads.order_by(F("last_contact_at").desc(nulls_last=True), "-id")[
        start : start + per_page
    ]
    return {
        "total": total,
        "page": page,
        "per_page": per_page,
        "results": [lead_snapshot(lead) for lead in rows],
    }


def _search_filter(search: str) -> Q:
    """Name contains the text; or, when the text is a (partial) phone number, phone contains
    its digits ("555-123" finds +15551230001)."""
    by_name = Q(name__icontains=search)
    digits = "".join(ch for ch in search if ch.isdigit())
    if digits and not search.strip("+()-. 0123456789"):
        return by_name | Q(phone__contains=digits)
    return by_name


def lead_counts(organization_id: int | None = None) -> dict:
    """Number of leads per status, and the total."""
    return gate.get_or_load(
        COUNTS,
        f"{organization_id or 'all'}",
        lambda: _load_lead_counts(organization_id),
        scopes=[COUNTS_SCOPE],
    )


def _load_lead_counts(organization_id: int | None) -> dict:
    leads = Lead.objects.all()
    if organization_id is not None:
        leads = leads.filter(organization_id=organization_id)
    by_status = dict(leads.values_list("status").annotate(n=Count("id")).order_by())
    counts = {status: by_status.get(status, 0) for status in Lead.Status.values}
    counts["total"] = sum(by_status.values())
    return counts
