"""ElevenLabs: the call-initiation webhook (on the caller's dial tone) and the post-call
webhook (transcript, audio, initiation failure)."""

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import uuid

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from leads.models import Lead, WebhookEvent
from leads.phones import MAX_INPUT_LENGTH, InvalidPhoneNumber, normalize_phone
from leads.services import acall_context
from leads.services import calls as calls_module
from leads.webhooks import deliveries, handlers, intake, variables
from leads.webhooks.deferred import writer
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
    trip, on the event loop). The call is recorded off the response path."""
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
    call = (context["organization"]["id"], customer, lead_id, payload, now)
    await writer.asubmit_batched(record_initiations, call)
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


def record_initiations(calls: list[tuple]) -> None:
    """Deferred, in batches: each call's delivery row and conversation (status initiated).
    Known callers' calls are written together (a few statements for the whole batch); a new
    caller's, one without a call SID, or one whose lead has gone since it was answered, one by
    one through the general delivery path, which records a call that fails as failed with its
    error. If the batch itself fails, its calls are recorded one by one: one bad call never
    loses the others."""
    known = [call for call in calls if call[2] is not None and call[3].get("call_sid")]
    alone = [call for call in calls if call not in known]
    if known:
        try:
            alone += _record_known_calls(known)
        except DatabaseError:
            log.exception("recording %d initiations together failed; one by one now", len(known))
            alone += known
    for call in alone:
        record_initiation(*call)


def _stored(organization_id, customer, lead_id, payload, started_at) -> dict:
    resolved = {
        "organization_id": organization_id,
        "customer": customer,
        "lead_id": lead_id,
        "started_at": started_at.isoformat(),
    }
    return {**payload, "opsdash": resolved}


def _record_known_calls(calls: list[tuple]) -> list[tuple]:
    """Records the calls whose lead still exists; returns the others, with no lead id."""
    lead_ids = {call[2] for call in calls}
    existing = set(Lead.objects.filter(pk__in=lead_ids).values_list("id", flat=True))
    gone = [
        (org, customer, None, *rest)
        for org, customer, lead_id, *rest in calls
        if lead_id not in existing
    ]
    calls = [call for call in calls if call[2] in existing]
    keys = {f"{INITIATION}:{call[3]['call_sid']}": call for call in calls}
    with transaction.atomic():
        seen = set(
            WebhookEvent.objects.filter(provider=PROVIDER, idempotency_key__in=keys).values_list(
                "idempotency_key", flat=True
            )
        )
        if seen:  # repeated deliveries: counted, and they change nothing
            WebhookEvent.objects.filter(provider=PROVIDER, idempotency_key__in=seen).update(
                duplicates=F("duplicates") + 1
            )
        fresh = {key: call for key, call in keys.items() if key not in seen}
        now = timezone.now()
        WebhookEvent.objects.bulk_create(
            [
                WebhookEvent(
                    provider=PROVIDER,
                    event_type=INITIATION,
                    idempotency_key=key,
                    payload=_stored(*call),
                    status=WebhookEvent.Status.PROCESSED,
                    attempts=1,
                    processed_at=now,
                )
                for key, call in fresh.items()
            ],
            ignore_conflicts=True,
        )
        calls_module.open_known_calls(
            [
                (lead_id, payload["call_sid"], started)
                for _, _, lead_id, payload, started in fresh.values()
            ]
        )
    return gone


def record_initiation(
    organization_id: int, customer: str, lead_id: int | None, payload: dict, started_at
) -> None:
    """Deferred: the delivery row and the call's conversation (status initiated)."""
    call_sid = payload.get("call_sid") or None
    key = f"{INITIATION}:{call_sid or uuid.uuid4()}"
    stored = _stored(organization_id, customer, lead_id, payload, started_at)
    deliveries.receive(PROVIDER, INITIATION, key, stored, handlers.initiation)


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
