"""ElevenLabs: the call-initiation webhook (on the caller's dial tone) and the post-call
webhook (transcript, audio, initiation failure)."""

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import uuid
from datetime import datetime
from typing import NamedTuple

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from leads.models import Lead, WebhookEvent
from leads.phones import MAX_INPUT_LENGTH, InvalidPhoneNumber, normalize_phone
from leads.services import acall_context
from leads.services import calls as calls_module
from leads.webhooks import deliveries, handlers, intake, recording, variables
from leads.webhooks.intake import Rejected
from leads.webhooks.signatures import BadSignature, verify_elevenlabs
from monitoring import counters

log = logging.getLogger(__name__)
PROVIDER = WebhookEvent.Provider.ELEVENLABS
INITIATION = "conversation_initiation"


# --- call initiation ----------------------------------------------------------------------


@intake.webhook
async def conversation_initiation(request: HttpRequest) -> JsonResponse:
    _check_shared_secret(request)
    body = intake.read_body(request)
    intake.require_content_type(request, "application/json")
    try:
        payload = intake.parse_json_object(body)
    except intake.TooDeep:
        # A caller may be on the line: the generic answer, never an error.
        counters.increment("webhook.elevenlabs.initiation_fallback")
        return JsonResponse(variables.fallback_answer(""))
    intake.require_fields(payload, ["caller_id", "called_number"])
    try:
        answer = await asyncio.wait_for(
            answer_initiation(payload), timeout=settings.INITIATION_TIME_BUDGET
        )
    except Exception as exc:  # the documented fail-safe: a caller on the line always gets an answer
        counters.increment("webhook.elevenlabs.initiation_fallback")
        detail = str(exc) or "no answer within the time budget"
        log.error("initiation answered with defaults: %s: %s", type(exc).__name__, detail)
        answer = variables.fallback_answer(_phone_or_raw(payload.get("caller_id")))
    return JsonResponse(answer)


def _check_shared_secret(request: HttpRequest) -> None:
    secret = settings.ELEVENLABS_INITIATION_SECRET
    if not secret:
        if settings.WEBHOOK_VERIFY:
            raise Rejected(503, "ELEVENLABS_INITIATION_SECRET is not configured")
        return
    sent = request.headers.get(settings.ELEVENLABS_INITIATION_HEADER, "")
    if not hmac.compare_digest(sent.encode(), secret.encode()):
        what = "missing" if not sent else "wrong"
        raise Rejected(401, f"{what} {settings.ELEVENLABS_INITIATION_HEADER} header")


async def answer_initiation(payload: dict) -> dict:
    """The answer, from the cached call context (with a warm cache: no SQL, one Redis round
    trip, on the event loop). The call is spooled (one write) and recorded off the response
    path, a new caller's as a known caller's."""
    now = timezone.now()
    caller, called = _phone_or_raw(payload["caller_id"]), _phone_or_raw(payload["called_number"])
    outbound = False
    context = await _context_or_none(called, caller)
    if context is None or context["organization"] is None:
        # An outbound call: our number is the caller and the customer is the one called.
        reverse = await _context_or_none(caller, called)
        if reverse is not None and reverse["organization"] is not None:
            context, outbound = reverse, True
    customer = called if outbound else caller
    if context is None or context["organization"] is None:
        counters.increment("webhook.elevenlabs.initiation_unknown_number")
        log.warning("initiation for %s: no organization answers on it", called)
        return variables.fallback_answer(customer, outbound)
    lead_id = context["lead"]["id"] if context["lead"] else None
    if "call_sid" in payload and not calls_module.call_sid_or_none(payload["call_sid"]):
        payload = {**payload, "call_sid": None}  # not a call SID: recorded without one
    call = Call(context["organization"]["id"], customer, lead_id, payload, now, uuid.uuid4().hex)
    await recording.asubmit(call)
    return variables.initiation_answer(context, customer, outbound, now)


def _phone_or_raw(raw) -> str:
    """E.164, or what was sent (cut to a phone number's length: it is echoed in answers)."""
    try:
        return normalize_phone(str(raw))
    except InvalidPhoneNumber:
        return str(raw or "")[:MAX_INPUT_LENGTH]


async def _context_or_none(org_number: str, customer: str) -> dict | None:
    try:
        return await acall_context(org_number, customer)
    except InvalidPhoneNumber:
        return None


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


# --- post-call ----------------------------------------------------------------------------


@intake.webhook
def post_call(request: HttpRequest) -> JsonResponse:
    body = intake.read_body(request)
    _verify_post_call_signature(request, body)
    intake.require_content_type(request, "application/json")
    envelope = intake.parse_json_object(body)
    intake.require_fields(envelope, ["type", "data"])
    data = envelope["data"]
    if not isinstance(data, dict):
        raise Rejected(400, "data must be a JSON object")
    intake.require_fields(data, ["conversation_id"], where="data")
    event_type = str(envelope["type"])
    # Longer than the columns that keep them: refused now, not a database error (and a retry
    # for ever) later.
    if len(event_type) > 64:
        raise Rejected(400, "type is longer than 64 characters")
    if len(str(data["conversation_id"])) > 128:
        raise Rejected(400, "data.conversation_id is longer than 128 characters")
    key = f"{event_type}:{data['conversation_id']}"
    handler = handlers.HANDLERS.get((PROVIDER, event_type)) or handlers.unhandled(event_type)
    try:
        outcome = deliveries.receive(PROVIDER, event_type, key, _storable(envelope), handler)
    except DatabaseError:
        # Nothing was stored: ask the provider to deliver again rather than lose it.
        return intake.error_response(503, "temporarily unable to record the delivery; retry")
    if outcome.repeated:
        return JsonResponse({"status": "duplicate", "event": outcome.event.pk})
    if outcome.failed:
        # Answered 200 on purpose: the delivery is stored with its error for replay, and
        # ElevenLabs disables a webhook that keeps failing.
        return JsonResponse({"status": "failed", "event": outcome.event.pk})
    return JsonResponse({"status": outcome.event.status, "event": outcome.event.pk})


def _verify_post_call_signature(request: HttpRequest, body: bytes) -> None:
    secret = settings.ELEVENLABS_WEBHOOK_SECRET
    if not secret:
        if settings.WEBHOOK_VERIFY:
            raise Rejected(503, "ELEVENLABS_WEBHOOK_SECRET is not configured")
        return
    try:
        verify_elevenlabs(
            secret,
            request.headers.get("ElevenLabs-Signature", ""),
            body,
            settings.WEBHOOK_MAX_AGE,
            settings.WEBHOOK_MAX_CLOCK_SKEW,
        )
    except BadSignature as exc:
        raise Rejected(401, str(exc)) from None


def _storable(envelope: dict) -> dict:
    """The envelope as stored: audio replaced by its size and digest (kept out of the row)."""
    data = envelope["data"]
    audio = data.get("full_audio")
    if not isinstance(audio, str):
        return envelope
    return {**envelope, "data": {**data, "full_audio": audio_summary(audio)}}


def audio_summary(encoded: str) -> dict:
    try:
        raw = base64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError):
        raw = encoded.encode()
    return {"omitted": True, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
