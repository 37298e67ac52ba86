"""Answered calls written to the database: each call's delivery row, its conversation (status
initiated) and, for a new caller, its lead, in batches of a fixed number of statements. The
spool's consumers (leads.webhooks.recording) hand the batches here."""

import logging
import uuid
from datetime import datetime
from typing import NamedTuple

from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.utils import timezone

from leads.models import Lead, WebhookEvent
from leads.services import calls as calls_module
from leads.webhooks import deliveries, handlers

log = logging.getLogger(__name__)
PROVIDER = WebhookEvent.Provider.ELEVENLABS
INITIATION = "conversation_initiation"


class Call(NamedTuple):
    """An answered call, as recorded: who it is for, as resolved when it was answered, and the
    answer's own id (a replayed record of one answer is recognized as such)."""

    organization_id: int
    customer: str
    lead_id: int | None
    payload: dict
    started_at: datetime
    answer: str | None = None


def record_initiations(calls: list[tuple]) -> None:
    """Deferred, in batches: each call's delivery row, its conversation (status initiated) and,
    for a new caller, the lead. Calls with a call SID, of known and new callers alike, are
    written together in a fixed number of statements whatever the batch's size and mix; one
    without a call SID, or one whose lead has gone since it was answered, goes one by one
    through the general delivery path, which records a call that fails as failed with its
    error. If the batch itself fails, its calls are recorded one by one: one bad call never
    loses the others."""
    calls = [Call(*call) for call in calls]
    together = [call for call in calls if call.payload.get("call_sid")]
    alone = [call for call in calls if not call.payload.get("call_sid")]
    if together:
        try:
            alone += _record_together(together)
        except DatabaseError:
            log.exception("recording %d initiations together failed; one by one now", len(together))
            alone += together
    for call in alone:
        record_initiation(*call)


def _stored(call: Call) -> dict:
    resolved = {
        "organization_id": call.organization_id,
        "customer": call.customer,
        "lead_id": call.lead_id,
        "started_at": call.started_at.isoformat(),
    }
    if call.answer:
        resolved["answer"] = call.answer
    return {**call.payload, "opsdash": resolved}


def _record_together(calls: list[Call]) -> list[Call]:
    """Records the calls in one transaction; returns those whose known lead has gone (the
    general path re-creates it). New callers' leads: one INSERT ... ON CONFLICT DO NOTHING,
    then every lead of the batch in one SELECT; then the deliveries and conversations."""
    new = sorted({(call.organization_id, call.customer) for call in calls if call.lead_id is None})
    with transaction.atomic():
        if new:
            Lead.objects.bulk_create(
                [Lead(organization_id=org, phone=phone) for org, phone in new],
                ignore_conflicts=True,
            )
        by_id, by_caller = _leads_of(calls, new)
        resolved, gone = [], []
        for call in calls:
            lead_id = by_caller.get((call.organization_id, call.customer))
            if call.lead_id is not None:
                lead_id = call.lead_id if call.lead_id in by_id else None
            if lead_id is None:
                gone.append(call._replace(lead_id=None))
            else:
                resolved.append((call, lead_id))
        _record_deliveries(resolved)
    return gone


def _leads_of(calls: list[Call], new: list[tuple[int, str]]) -> tuple[set, dict]:
    """(ids of the known callers' leads that still exist, new callers' lead ids by caller)."""
    wanted = Q(pk__in={call.lead_id for call in calls if call.lead_id is not None})
    for org, phone in new:
        wanted |= Q(organization_id=org, phone=phone)
    rows = list(Lead.objects.filter(wanted).values_list("id", "organization_id", "phone"))
    new_callers = set(new)
    by_caller = {(org, phone): i for i, org, phone in rows if (org, phone) in new_callers}
    return {i for i, _, _ in rows}, by_caller


def _record_deliveries(resolved: list[tuple[Call, int]]) -> None:
    """The delivery rows and conversations of calls whose lead is known (`resolved`: (call,
    lead id)). A delivery seen before changes nothing: a repeat from the provider is counted,
    a replayed record of the same answer is not."""
    keys = {f"{INITIATION}:{call.payload['call_sid']}": (call, lead) for call, lead in resolved}
    seen = dict(
        WebhookEvent.objects.filter(provider=PROVIDER, idempotency_key__in=keys).values_list(
            "idempotency_key", "payload__opsdash__answer"
        )
    )
    repeats = [key for key, answer in seen.items() if not answer or answer != keys[key][0].answer]
    if repeats:
        WebhookEvent.objects.filter(provider=PROVIDER, idempotency_key__in=repeats).update(
            duplicates=F("duplicates") + 1
        )
    fresh = {key: value for key, value in keys.items() if key not in seen}
    now = timezone.now()
    WebhookEvent.objects.bulk_create(
        [
            WebhookEvent(
                provider=PROVIDER,
                event_type=INITIATION,
                idempotency_key=key,
                payload=_stored(call),
                status=WebhookEvent.Status.PROCESSED,
                attempts=1,
                processed_at=now,
            )
            for key, (call, _) in fresh.items()
        ],
        ignore_conflicts=True,
    )
    calls_module.open_known_calls(
        [(lead, call.payload["call_sid"], call.started_at) for call, lead in fresh.values()]
    )


def record_initiation(
    organization_id: int,
    customer: str,
    lead_id: int | None,
    payload: dict,
    started_at,
    answer: str | None = None,
) -> None:
    """Deferred: the delivery row and the call's conversation (status initiated)."""
    call = Call(organization_id, customer, lead_id, payload, started_at, answer)
    key = f"{INITIATION}:{payload.get('call_sid') or answer or uuid.uuid4()}"
    deliveries.receive(PROVIDER, INITIATION, key, _stored(call), handlers.initiation)
