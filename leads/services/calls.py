"""Voice calls reported by the provider: opened at initiation, completed (or failed) by the
post-call webhook. Each function is idempotent: a replayed delivery changes nothing twice."""

from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Case, Q, When
from django.utils import timezone

from leads.models import Conversation, Lead, Message
from leads.phones import InvalidPhoneNumber, normalize_phone
from leads.services.reads import organization_for_number
from leads.services.status import advance_status

# A call reported by post-call is matched to a still-open call of the same customer this recent.
MATCH_WINDOW = timedelta(hours=6)
ROLES = {"user": Message.Role.CUSTOMER, "agent": Message.Role.AGENT}
NAME_KEYS = ("customer_name", "name")
STATUS_KEYS = ("lead_status", "status")
SENTIMENT_KEYS = ("sentiment", "customer_sentiment")


class CallNotMatched(Exception):
    """No conversation, lead or organization could be found for a provider's call report."""


def open_call(
    organization_id: int,
    phone: str,
    call_sid: str | None,
    started_at: datetime,
    lead_id: int | None = None,
) -> Conversation:
    """The voice conversation a call initiation opens (once per call SID). A write path: the
    lead is found (or created) in the database, not through the cache."""
    try:
        return _open_call(organization_id, phone, call_sid, started_at, lead_id)
    except IntegrityError:
        # The same call opened concurrently (the initiation's deferred write and its post-call
        # report racing): the other one's row is this call's.
        if call_sid is None:
            raise
        return Conversation.objects.get(call_sid=call_sid)


def _open_call(organization_id, phone, call_sid, started_at, lead_id) -> Conversation:
    with transaction.atomic():
        if call_sid:
            existing = Conversation.objects.filter(call_sid=call_sid).first()
            if existing:
                return existing
        if lead_id is None or not Lead.objects.filter(pk=lead_id).exists():
            # New caller, or one whose lead was deleted since the initiation was answered.
            lead, _ = Lead.objects.get_or_create(organization_id=organization_id, phone=phone)
            lead_id = lead.id
        return Conversation.objects.create(
            lead_id=lead_id,
            channel=Conversation.Channel.VOICE,
            call_sid=call_sid or None,
            status=Conversation.Status.INITIATED,
            started_at=started_at,
        )


def open_known_calls(calls: list[tuple[int, str, datetime]]) -> None:
    """Open many calls of known leads at once: (lead id, call SID, started at). A SID already
    open is left as it is. A call ringing in is on its lead's page only (see leads.invalidation),
    so the callers' contexts stay warm for the calls themselves."""
    Conversation.objects.bulk_create(
        [
            Conversation(
                lead_id=lead_id,
                channel=Conversation.Channel.VOICE,
                call_sid=call_sid,
                status=Conversation.Status.INITIATED,
                started_at=started_at,
            )
            for lead_id, call_sid, started_at in calls
        ],
        ignore_conflicts=True,
    )


def call_parties(data: dict) -> tuple[str | None, str | None, str | None]:
    """(organization number, customer number, call SID) of a post-call report. ElevenLabs names
    both numbers from the agent's side (`metadata.phone_call`: agent_number, external_number);
    an initiation failure carries the telephony provider's own request instead
    (`metadata.body`: CallSid, From, To), where the customer is From on an inbound call and To
    on an outbound one."""
    metadata = data.get("metadata") or {}
    phone_call = metadata.get("phone_call") or {}
    if phone_call:
        agent, external = phone_call.get("agent_number"), phone_call.get("external_number")
        call_sid = phone_call.get("call_sid")
    else:
        body = metadata.get("body") or {}
        outbound = str(body.get("Direction") or body.get("direction") or "").startswith("outbound")
        caller, called = body.get("From") or body.get("from"), body.get("To") or body.get("to")
        agent, external = (caller, called) if outbound else (called, caller)
        call_sid = body.get("CallSid") or body.get("call_sid")
    return _phone_or_none(agent), _phone_or_none(external), call_sid_or_none(call_sid)


def call_sid_or_none(value) -> str | None:
    """A call SID as the telephony provider writes it (printable ASCII, at most 64
    characters), or None for anything else: it is a key, not free text."""
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable():
        return value
    return None


def _phone_or_none(raw) -> str | None:
    try:
        return normalize_phone(raw) if raw else None
    except InvalidPhoneNumber:
        return None


def record_transcript(data: dict) -> Conversation:
    """A finished call: every transcript turn as a message, the analysis on the conversation,
    and what was learned about the customer on the lead (never a step back, never erased).
    A call opened at initiation costs one query (the call and its lead, locked) and the writes."""
    metadata = data.get("metadata") or {}
    started_at = _from_unix(metadata.get("start_time_unix_secs")) or timezone.now()
    with transaction.atomic(savepoint=False):
        conversation = locked_reported_call(data, started_at)
        lead = conversation.lead
        _store_turns(conversation, lead, data, started_at)
        _complete(conversation, data, started_at)
        _learn(lead, data, conversation.ended_at)
    return conversation


def locked_reported_call(data: dict, started_at: datetime) -> Conversation:
    """The conversation a report is about, opened if there is none: by the provider's
    conversation id, then the call SID, then the customer's most recent open call; with its
    lead, both rows locked (one query when the call was opened at initiation)."""
    org_number, customer, call_sid = call_parties(data)
    provider_id = data["conversation_id"]
    by_id = (
        Q(provider_id=provider_id) | Q(call_sid=call_sid)
        if call_sid
        else Q(provider_id=provider_id)
    )
    found = (
        _locked_calls()
        .filter(by_id)
        .order_by(Case(When(provider_id=provider_id, then=0), default=1))
        .first()
    )
    if found is None and org_number and customer:
        open_calls = _locked_calls().filter(_open_call_of(org_number, customer))
        found = open_calls.order_by("-started_at").first()
    if found is not None:
        return found
    org = organization_for_number(org_number) if org_number else None
    if org is None or customer is None:
        raise CallNotMatched(
            f"no conversation {provider_id} and no organization/customer to open one"
            f" (agent_number={org_number}, external_number={customer})"
        )
    return _open_reported_call(org["id"], customer, call_sid, started_at)


def _locked_calls():
    return Conversation.objects.select_for_update(of=("self", "lead")).select_related("lead")


def _open_call_of(org_number: str, customer: str) -> Q:
    """The customer's most recent call still open, not matched to a report yet."""
    return Q(
        lead__organization__numbers__e164=org_number,
        lead__phone=customer,
        channel=Conversation.Channel.VOICE,
        provider_id__isnull=True,
        status__in=[Conversation.Status.INITIATED, Conversation.Status.ACTIVE],
        started_at__gte=timezone.now() - MATCH_WINDOW,
    )


def _open_reported_call(organization_id, customer, call_sid, started_at) -> Conversation:
    """A call reported with no conversation yet (its initiation lost or still being written):
    opened now, on the customer's lead (created if new), both locked."""
    lead = Lead.objects.select_for_update().filter(organization_id=organization_id, phone=customer)
    lead = lead.first() or _new_lead(organization_id, customer)
    call = Conversation(
        lead=lead,
        channel=Conversation.Channel.VOICE,
        call_sid=call_sid,
        status=Conversation.Status.INITIATED,
        started_at=started_at,
    )
    if not call_sid:
        call.save()
        return call
    try:
        with transaction.atomic():
            call.save()
        return call
    except IntegrityError:
        # The initiation's deferred write opened it meanwhile: that row is this call's.
        return _locked_calls().get(call_sid=call_sid)


def _new_lead(organization_id: int, phone: str) -> Lead:
    (lead,) = Lead.objects.bulk_create(
        [Lead(organization_id=organization_id, phone=phone)],
        update_conflicts=True,
        unique_fields=["organization", "phone"],
        update_fields=["phone"],
    )
    return Lead.objects.select_for_update().get(pk=lead.pk)


def _store_turns(conversation: Conversation, lead: Lead, data: dict, started_at: datetime) -> None:
    """Every turn not stored yet (a turn's provider id is unique: one stored before is skipped
    by the insert itself)."""
    provider_id = data["conversation_id"]
    turns = [
        (f"{provider_id}:{n}", turn)
        for n, turn in enumerate(data.get("transcript") or [])
        if isinstance(turn, dict) and (turn.get("message") or "").strip()
    ]
    if not turns:
        return
    Message.objects.bulk_create(
        [
            Message(
                conversation=conversation,
                lead=lead,
                role=ROLES.get(turn.get("role"), Message.Role.SYSTEM),
                body=turn["message"],
                provider_message_id=key,
                created_at=started_at
                + timedelta(seconds=float(turn.get("time_in_call_secs") or 0)),
            )
            for key, turn in turns
        ],
        ignore_conflicts=True,
    )


def _complete(conversation: Conversation, data: dict, started_at: datetime) -> None:
    metadata = data.get("metadata") or {}
    analysis = data.get("analysis") or {}
    duration = metadata.get("call_duration_secs")
    conversation.provider_id = data["conversation_id"]
    conversation.call_sid = conversation.call_sid or call_parties(data)[2]
    conversation.started_at = started_at
    conversation.duration_seconds = int(duration) if duration is not None else None
    conversation.ended_at = started_at + timedelta(seconds=conversation.duration_seconds or 0)
    conversation.status = Conversation.Status.COMPLETED
    conversation.title = (analysis.get("call_summary_title") or conversation.title)[:300]
    conversation.summary = analysis.get("transcript_summary") or conversation.summary
    conversation.classification = str(analysis.get("call_successful") or "")[:100]
    conversation.analysis = {
        **analysis,
        "termination_reason": metadata.get("termination_reason"),
        "status": data.get("status"),
    }
    conversation.save()


def collected_values(data: dict) -> dict:
    results = (data.get("analysis") or {}).get("data_collection_results") or {}
    values = {}
    for name, result in results.items():
        value = result.get("value") if isinstance(result, dict) else result
        if value not in (None, "", [], {}):
            values[name] = value
    return values


def _learn(lead: Lead, data: dict, contacted_at: datetime | None) -> None:
    collected = collected_values(data)
    name = _first(collected, NAME_KEYS)
    if isinstance(name, str) and name.strip():
        lead.name = name.strip()[:200]
    interest = {k: v for k, v in collected.items() if "interest" in k}
    lead.interest = {**lead.interest, **interest}
    known = set(NAME_KEYS + STATUS_KEYS + SENTIMENT_KEYS) | set(interest)
    lead.qualification = {
        **lead.qualification,
        **{k: v for k, v in collected.items() if k not in known},
    }
    proposed = _first(collected, STATUS_KEYS) or Lead.Status.CONTACTED
    lead.status = advance_status(lead.status, str(proposed).lower())
    sentiment = str(_first(collected, SENTIMENT_KEYS) or "").lower()
    if sentiment in Lead.Sentiment.values:
        lead.sentiment = sentiment
    if contacted_at and (lead.last_contact_at is None or contacted_at > lead.last_contact_at):
        lead.last_contact_at = contacted_at
    lead.save()


def _first(values: dict, keys: tuple[str, ...]):
    return next((values[k] for k in keys if k in values), None)


def mark_failed(data: dict) -> Conversation:
    """The provider could not start the call."""
    with transaction.atomic():
        conversation = locked_reported_call(data, timezone.now())
        conversation.status = Conversation.Status.FAILED
        conversation.ended_at = conversation.ended_at or timezone.now()
        conversation.provider_id = conversation.provider_id or data["conversation_id"]
        reason = data.get("failure_reason") or data.get("reason") or ""
        conversation.analysis = {**conversation.analysis, "failure_reason": reason}
        conversation.save()
    return conversation


def note_audio(data: dict, audio_summary: dict) -> Conversation | None:
    """The call's audio arrived: noted on the conversation (size, digest), never stored in a row."""
    with transaction.atomic():
        conversation = (
            Conversation.objects.select_for_update()
            .filter(provider_id=data["conversation_id"])
            .first()
        )
        if conversation is None:
            return None
        conversation.analysis = {**conversation.analysis, "audio": audio_summary}
        conversation.save(update_fields=["analysis"])
    return conversation


def _from_unix(value) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
