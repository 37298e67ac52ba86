"""Twilio: inbound texts and delivery-status callbacks, answered with TwiML."""

import logging
from xml.sax.saxutils import escape

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

from leads.models import WebhookEvent
from leads.webhooks import deliveries, handlers, intake
from leads.webhooks.intake import Rejected
from leads.webhooks.signatures import BadSignature, verify_twilio

log = logging.getLogger(__name__)
PROVIDER = WebhookEvent.Provider.TWILIO
FORM = "application/x-www-form-urlencoded"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def twiml(reply: str = "") -> HttpResponse:
    """<Response/>, or <Response><Message>reply</Message></Response> to answer the text."""
    inner = f"<Message>{escape(reply)}</Message>" if reply else ""
    body = (
        f"{XML_DECLARATION}<Response>{inner}</Response>"
        if inner
        else f"{XML_DECLARATION}<Response/>"
    )
    return HttpResponse(body, content_type="text/xml")


def _verified_params(request: HttpRequest) -> dict[str, list[str]]:
    intake.read_body(request)
    intake.require_content_type(request, FORM)
    try:
        params = {name: request.POST.getlist(name) for name in request.POST}
    except TooManyFieldsSent:
        raise Rejected(400, "too many form fields") from None
    token = settings.TWILIO_AUTH_TOKEN
    if not token:
        if settings.WEBHOOK_VERIFY:
            raise Rejected(503, "TWILIO_AUTH_TOKEN is not configured")
        return params
    # Twilio signs the public URL it called; behind a proxy that is PUBLIC_BASE_URL + path.
    url = settings.PUBLIC_BASE_URL + request.get_full_path()
    try:
        verify_twilio(token, request.headers.get("X-Twilio-Signature", ""), url, params)
    except BadSignature as exc:
        raise Rejected(403, str(exc)) from None
    return params


def _single(params: dict[str, list[str]]) -> dict[str, str]:
    """The stored payload: one value per name, lists kept where a name repeats (NUL
    characters replaced: see intake.without_nul)."""
    single = {name: values[0] if len(values) == 1 else values for name, values in params.items()}
    return intake.without_nul(single)


def _delivery_key(request: HttpRequest, fallback: str) -> str:
    return request.headers.get("I-Twilio-Idempotency-Token") or fallback


def _receive(event_type: str, key: str, payload: dict) -> deliveries.Outcome:
    handler = handlers.HANDLERS[(PROVIDER, event_type)]
    try:
        return deliveries.receive(PROVIDER, event_type, key, payload, handler)
    except DatabaseError:
        raise Rejected(503, "temporarily unable to record the delivery; retry") from None


@intake.webhook
def inbound_sms(request: HttpRequest) -> HttpResponse:
    payload = _single(_verified_params(request))
    intake.require_fields(payload, ["MessageSid", "From", "To"])
    outcome = _receive("sms", _delivery_key(request, payload["MessageSid"]), payload)
    if outcome.repeated or outcome.failed or outcome.duplicate or outcome.result is None:
        # Answered 200 on purpose: the text is stored (with its error, for replay_webhooks, or
        # as ignored), and an error answer would only make Twilio report a failure to nobody.
        return twiml()
    _, reply = outcome.result  # the open pages heard of the text from the write (leads.live)
    return twiml(reply)


@intake.webhook
def sms_status(request: HttpRequest) -> HttpResponse:
    payload = _single(_verified_params(request))
    intake.require_fields(payload, ["MessageSid", "MessageStatus"])
    fallback = f"{payload['MessageSid']}:{payload['MessageStatus']}"
    _receive("sms_status", _delivery_key(request, fallback), payload)
    return twiml()
