"""Every write to the lead domain makes stale what it changed, whatever path it took: services,
the admin's forms and bulk actions, `QuerySet.update()/delete()`, bulk operations, management
commands. Model signals (and `rows_changed`, sent by the domain's querysets) name the scopes a
changed row affects, old values included; the scopes of one transaction are invalidated
together once it commits, in one round trip, computed before the commit so that nothing can
fail between the commit and the invalidation but Redis itself (which the gate answers with a
new generation). Afterwards the callers' hot entries are re-read, so their next call or text
finds them warm."""

import logging

from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save, pre_delete

from leads.models import Conversation, Lead, Message, Organization, PhoneNumber, rows_changed
from leads.services import rewarm
from leads.services.cache_keys import ORGS_SCOPE, lead_scope, lead_scopes
from monitoring.cache import gate, writers

log = logging.getLogger(__name__)


class Batch:
    """The scopes one transaction changed, invalidated together, once."""

    def __init__(self) -> None:
        self.scopes: set[str] = set()
        self.callers: set[tuple[int, str]] = set()  # (organization id, phone) to re-warm
        self.resolved_leads: set[int] = set()
        self.done = False

    def run(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            gate.invalidate(scopes=sorted(self.scopes))
        except Exception:  # noqa: BLE001 - a committed write must never go uninvalidated silently
            log.exception("cache: invalidation failed after commit; starting a new generation")
            gate.invalidation_failed()
            return
        rewarm.callers_soon(self.callers)


class PendingInvalidation:
    """One write's on-commit callback; every callback of a transaction shares its batch, and
    the first to run does the whole batch. (A callback dropped with a rolled-back savepoint
    only leaves its scopes to be invalidated anyway: harmless.)"""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def __call__(self) -> None:
        self.batch.run()


def pending() -> Batch:
    """The batch of this transaction's writes (run at once outside a transaction)."""
    if not connection.in_atomic_block:
        return Batch()
    batch = next(
        (
            callback.batch
            for _, callback, _ in connection.run_on_commit
            if isinstance(callback, PendingInvalidation) and not callback.batch.done
        ),
        None,
    )
    if batch is None:
        writers.enlistment.enlist()  # before the commit: a death after it is then noticed
        batch = Batch()
    transaction.on_commit(PendingInvalidation(batch), robust=True)
    return batch


def _changed(scopes: set[str], callers=(), target: Batch | None = None) -> None:
    """Add to this transaction's batch (`target`, when the caller already has it)."""
    target = target or pending()
    target.scopes |= scopes
    target.callers |= set(callers)
    if not connection.in_atomic_block:
        target.run()


def _lead_changed(lead_ids, leads) -> None:
    """Leads changed, known by id (`leads`: those of them loaded already); the phones of the
    others (to reach their call contexts) are looked up, once per lead per transaction."""
    target = pending()
    callers = _callers_of(leads)
    target.resolved_leads |= {lead.id for lead in leads}
    missing = {i for i in lead_ids if i is not None} - target.resolved_leads
    if missing:
        rows = Lead.objects.filter(pk__in=missing).values_list("id", "organization_id", "phone")
        callers |= {(org, phone) for _, org, phone in rows}
        target.resolved_leads |= {lead_id for lead_id, _, _ in rows}
    phones = {phone for _, phone in callers}
    scopes = {lead_scope(i) for i in lead_ids if i is not None}
    _changed(scopes | lead_scopes(None, phones), callers, target)


def _callers_of(leads) -> set[tuple[int, str]]:
    return {(lead.organization_id, lead.phone) for lead in leads}


# --- leads ------------------------------------------------------------------------------------


def _lead_saved(sender, instance: Lead, **kwargs) -> None:
    old_phone = instance.loaded_values().get("phone")
    phones = {instance.phone, old_phone} - {None}
    target = pending()
    target.resolved_leads.add(instance.id)
    _changed(lead_scopes(instance.id, phones), {(instance.organization_id, instance.phone)}, target)


def _lead_deleted(sender, instance: Lead, **kwargs) -> None:
    phones = {instance.phone, instance.loaded_values().get("phone")} - {None}
    target = pending()
    target.resolved_leads.add(instance.id)
    _changed(lead_scopes(instance.id, phones), target=target)


def _leads_changed(sender, before, after, changes, **kwargs) -> None:
    phones = {row["phone"] for row in before} | {lead.phone for lead in after}
    if "phone" in changes:
        phones.add(changes["phone"])
    ids = {row["id"] for row in before} | {lead.id for lead in after}
    scopes = set().union(*(lead_scopes(i, ()) for i in ids)) if ids else set()
    # As for a lead saved: the callers of the leads written are re-warmed (those in use).
    _changed(scopes | lead_scopes(None, phones), _callers_of(after))


# --- conversations and messages ---------------------------------------------------------------


def _ringing(conversation: Conversation, created: bool) -> bool:
    """A call just opened and still ringing in is on the lead's page only: it is not part of
    the caller's call context, which stays warm for the call itself."""
    return (
        created
        and conversation.channel == Conversation.Channel.VOICE
        and conversation.status == Conversation.Status.INITIATED
    )


def _child_saved(sender, instance, created=False, **kwargs) -> None:
    if sender is Conversation and _ringing(instance, created):
        _changed({lead_scope(instance.lead_id)})
        return
    lead_ids = {instance.lead_id, instance.loaded_values().get("lead_id")}
    cached = [instance.lead] if sender.lead.is_cached(instance) else []
    _lead_changed(lead_ids, [lead for lead in cached if lead.id == instance.lead_id])


def _children_changed(sender, before, after, changes, **kwargs) -> None:
    if sender is Conversation and after and all(_ringing(c, True) for c in after):
        _changed({lead_scope(c.lead_id) for c in after})
        return
    lead_ids = {row["lead_id"] for row in before} | {obj.lead_id for obj in after}
    if "lead" in changes or "lead_id" in changes:
        new = changes.get("lead_id", changes.get("lead"))
        lead_ids.add(getattr(new, "pk", new))
    cached = [
        obj.lead for obj in after if sender.lead.is_cached(obj) and obj.lead.id == obj.lead_id
    ]
    _lead_changed(lead_ids, cached)


# --- organizations and their numbers ------------------------------------------------------------


def _organizations_changed(sender, **kwargs) -> None:
    """An organization's details or numbers are in every call context and lead page."""
    _changed({ORGS_SCOPE})


def connect() -> None:
    for model in (Organization, PhoneNumber):
        post_save.connect(_organizations_changed, sender=model, dispatch_uid=f"inv-save-{model}")
        post_delete.connect(_organizations_changed, sender=model, dispatch_uid=f"inv-del-{model}")
        rows_changed.connect(_organizations_changed, sender=model, dispatch_uid=f"inv-rows-{model}")
    post_save.connect(_lead_saved, sender=Lead, dispatch_uid="inv-save-lead")
    # Before the delete: a cascade deletes the lead's messages and conversations first, and
    # their signals then find the lead already accounted for.
    pre_delete.connect(_lead_deleted, sender=Lead, dispatch_uid="inv-del-lead")
    rows_changed.connect(_leads_changed, sender=Lead, dispatch_uid="inv-rows-lead")
    for model in (Conversation, Message):
        post_save.connect(_child_saved, sender=model, dispatch_uid=f"inv-save-{model}")
        post_delete.connect(_child_saved, sender=model, dispatch_uid=f"inv-del-{model}")
        rows_changed.connect(_children_changed, sender=model, dispatch_uid=f"inv-rows-{model}")
