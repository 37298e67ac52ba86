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
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from leads.phones import MAX_INPUT_LENGTH, InvalidPhoneNumber, normalize_phone
from leads.services import acall_context
from leads.services import calls as calls_module
from leads.webhooks import deliveries, handlers, intake, recording, variables
from leads.webhooks.initiation_records import PROVIDER, Call
from leads.webhooks.intake import Rejected
from leads.webhooks.signatures import BadSignature, verify_elevenlabs
from monitoring import counters

log = logging.getLogger(__name__)


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
