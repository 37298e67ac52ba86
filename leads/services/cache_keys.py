"""What the lead domain caches, for how long, and which entries a write to a lead affects.

Namespaces:
- org:    organization by a number it answers on        key "<number>"
- lead:   lead by organization and phone                key "<org id>:<phone>"
- ctx:    call context by called number and caller      key "<org number>:<phone>"
- leads:  dashboard lead lists, every variant           group "lists"
- counts: dashboard counters by status                  group "counts"
- timeline: a lead's page (details, conversations, messages)  key "<lead id>"
"""

import functools
import hashlib

from django.db import connection, transaction

from leads.models import Lead, PhoneNumber
from monitoring.cache import gate

TTL = {
    "org": 3600,
    "lead": 3600,
    "ctx": 3600,
    "leads": 300,
    "counts": 300,
    "timeline": 300,
}
# "Not found" answers (an unknown number) are kept briefly: a number added outside the admin
# (which flushes) is seen within this many seconds.
NOT_FOUND_TTL = 60
LISTS_GROUP = "lists"
COUNTS_GROUP = "counts"


def org_ttl(org: dict | None) -> int:
    return TTL["org"] if org is not None else NOT_FOUND_TTL


def context_ttl(context: dict) -> int:
    return TTL["ctx"] if context["organization"] is not None else NOT_FOUND_TTL


def lead_key(organization_id: int, phone: str) -> str:
    return f"{organization_id}:{phone}"


def context_key(org_number: str, phone: str) -> str:
    return f"{org_number}:{phone}"


def variant_key(**params) -> str:
    """A short stable key for one variant of a list (any filters, any page)."""
    text = "&".join(f"{name}={params[name]}" for name in sorted(params))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def invalidate_lead_on_commit(organization_id: int, phone: str, lead_id: int | None = None) -> None:
    """After the current transaction commits, drop every entry a change to this lead (its row,
    its conversations, its messages) can make stale: its lookup entry, its call context under
    every number its organization answers on, its timeline, and every lead list and counter.
    Pass `lead_id` when known; without it the lead is looked up (it may have been deleted).
    Several writes to one lead in one transaction invalidate once."""
    invalidation = LeadInvalidation(organization_id, phone, lead_id)
    pending = connection.run_on_commit if connection.in_atomic_block else []
    earlier = next((callback for _, callback, _ in pending if callback == invalidation), None)
    if earlier is not None:
        # Registered again (a savepoint rolled back may drop either one), but done only once.
        invalidation.outcome = earlier.outcome
    # Robust: a failure here is logged by Django and never undoes or fails the committed write.
    transaction.on_commit(invalidation, robust=True)


class LeadInvalidation:
    """The on-commit invalidation of one lead; equal to another for the same lead."""

    def __init__(self, organization_id: int, phone: str, lead_id: int | None) -> None:
        self.organization_id, self.phone, self.lead_id = organization_id, phone, lead_id
        self.__qualname__ = f"invalidation of lead {phone}"  # named in Django's on_commit log
        self.outcome = {"done": False}  # shared by every registration of it in one transaction

    def __eq__(self, other) -> bool:
        return isinstance(other, LeadInvalidation) and (self.organization_id, self.phone) == (
            other.organization_id,
            other.phone,
        )

    __hash__ = None

    def __call__(self) -> None:
        if self.outcome["done"]:
            return
        self.outcome["done"] = True
        organization_id, phone = self.organization_id, self.phone
        numbers = list(
            PhoneNumber.objects.filter(organization_id=organization_id).values_list(
                "e164", flat=True
            )
        )
        keys = [("lead", lead_key(organization_id, phone))]
        keys += [("ctx", context_key(number, phone)) for number in numbers]
        timeline_of = self.lead_id or _lead_id(organization_id, phone)
        if timeline_of is not None:
            keys.append(("timeline", str(timeline_of)))
        dropped = gate.invalidate(
            keys=keys, groups=[("leads", LISTS_GROUP), ("counts", COUNTS_GROUP)]
        )
        refresh_hot_entries(phone, dropped)


def invalidate_timeline_on_commit(lead_id: int) -> None:
    """After commit, drop only the lead's page (for writes nothing else shows)."""
    transaction.on_commit(lambda: gate.invalidate(keys=[("timeline", str(lead_id))]), robust=True)


def _lead_id(organization_id: int, phone: str) -> int | None:
    return (
        Lead.objects.filter(organization_id=organization_id, phone=phone)
        .values_list("id", flat=True)
        .first()
    )


def refresh_hot_entries(phone: str, dropped: set) -> None:
    """Reload the hot entries a write dropped (the lead lookup, its call contexts), so the
    customer's next call or text finds them warm: every call and text writes to the lead, and
    the next one must not pay for it."""
    from leads.services import reads  # reads imports this module

    for namespace, key in dropped:
        if namespace == "ctx":
            number = key.split(":", 1)[0]
            loader, ttl = functools.partial(reads._load_call_context, number, phone), context_ttl
        elif namespace == "lead":
            organization_id = int(key.split(":", 1)[0])
            loader, ttl = functools.partial(reads._load_lead, organization_id, phone), TTL["lead"]
        else:
            continue
        gate.refresh(namespace, key, loader, ttl)
