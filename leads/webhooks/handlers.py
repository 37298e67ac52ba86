"""What each recorded delivery does, by provider and event type. Views and
`manage.py replay_webhooks` both run a delivery through `for_event`."""

from collections.abc import Callable
from datetime import datetime

from leads.models import WebhookEvent
from leads.phones import InvalidPhoneNumber
from leads.services import calls, sms
from leads.webhooks.deliveries import Ignored

ELEVENLABS = WebhookEvent.Provider.ELEVENLABS
TWILIO = WebhookEvent.Provider.TWILIO


def initiation(payload: dict):
    """Open the call; the view stored who it is for under "opsdash" when it answered."""
    resolved = payload["opsdash"]
    return calls.open_call(
        resolved["organization_id"],
        resolved["customer"],
        payload.get("call_sid") or None,
        datetime.fromisoformat(resolved["started_at"]),
        lead_id=resolved.get("lead_id"),
    )


def transcription(payload: dict):
    return calls.record_transcript(payload["data"])


def initiation_failure(payload: dict):
    return calls.mark_failed(payload["data"])


def audio(payload: dict):
    data = payload["data"]
    summary = data.get("full_audio") if isinstance(data.get("full_audio"), dict) else {}
    if calls.note_audio(data, summary) is None:
        raise Ignored("audio for a conversation not recorded yet")


def inbound_sms(payload: dict):
    try:
        return sms.receive_text(
            payload["To"], payload["From"], payload.get("Body", ""), payload["MessageSid"]
        )
    except InvalidPhoneNumber as exc:
        raise Ignored(f"not a phone number: {exc}") from None
    except sms.AlreadyReceived as exc:
        raise Ignored(str(exc)) from None


def sms_status(payload: dict):
    message = sms.update_delivery_status(
        payload["MessageSid"], payload["MessageStatus"], payload.get("ErrorCode", "")
    )
    if message is None:
        raise Ignored(f"no message with sid {payload['MessageSid']}")
    return message


HANDLERS: dict[tuple[str, str], Callable[[dict], object]] = {
    (ELEVENLABS, "conversation_initiation"): initiation,
    (ELEVENLABS, "post_call_transcription"): transcription,
    (ELEVENLABS, "call_initiation_failure"): initiation_failure,
    (ELEVENLABS, "post_call_audio"): audio,
    (TWILIO, "sms"): inbound_sms,
    (TWILIO, "sms_status"): sms_status,
}


def for_event(event: WebhookEvent) -> Callable[[dict], object]:
    return HANDLERS.get((event.provider, event.event_type)) or unhandled(event.event_type)


def unhandled(event_type: str) -> Callable[[dict], object]:
    def ignore(payload: dict):
        # Accepted and recorded as ignored, so the provider stops retrying an event type
        # opsdash does not act on.
        raise Ignored(f"unhandled event type {event_type!r}")

    return ignore
