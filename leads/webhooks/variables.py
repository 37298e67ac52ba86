"""The dynamic variables the voice agent's prompt uses, built from a call context. Every answer
carries every variable: a missing one breaks the call, so the fallback has them all too."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
CONTEXT_LIMIT = 1500
SUMMARY_LIMIT = 500

DEFAULTS = {
    "customer_name": "",
    "customer_phone": "",
    "lead_status": "new",
    "bike_interest": "",
    "conversation_context": "",
    "previous_summary": "",
    "organization_name": "our store",
    "organization_id": "",
    "location_address": "",
    "business_hours": "",
    "current_time": "",
    "current_day": "",
    "current_datetime": "",
    "has_customer_name": False,
    "dynamic_greeting": "Thanks for calling! How can I help you today?",
    "customer_history": "No previous conversations.",
    "last_topic": "",
    "qualification_status": "unknown",
    "interaction_count": 0,
    "last_contact": "never",
    "is_outbound": False,
    "call_type": "inbound",
    "store_is_open": False,
    "store_status": "unknown",
}


def fallback_answer(customer_phone: str = "", outbound: bool = False) -> dict:
    variables = {**DEFAULTS, "customer_phone": customer_phone}
    variables.update(_clock(datetime.now(ZoneInfo("UTC"))))
    if outbound:
        variables.update(is_outbound=True, call_type="outbound")
    return _answer(variables)


def initiation_answer(context: dict, customer_phone: str, outbound: bool, now: datetime) -> dict:
    org = context.get("organization") or {}
    lead = context.get("lead") or {}
    variables = {**DEFAULTS, "customer_phone": customer_phone}
    variables.update(_organization(org, now))
    variables.update(_lead(lead))
    variables.update(_history(context))
    variables["is_outbound"] = outbound
    variables["call_type"] = "outbound" if outbound else "inbound"
    variables["dynamic_greeting"] = _greeting(variables, outbound)
    return _answer(variables)


def _answer(variables: dict) -> dict:
    return {
        "type": "conversation_initiation_client_data",
        "dynamic_variables": variables,
        "conversation_config_override": {
            "agent": {
                "first_message": variables["dynamic_greeting"],
                "language": settings.AGENT_LANGUAGE,
            }
        },
    }


def _organization(org: dict, now: datetime) -> dict:
    if not org:
        return _clock(now)
    tz = _zone(org.get("timezone"))
    local = now.astimezone(tz)
    hours = org.get("business_hours") or {}
    is_open, status = store_status(hours, local)
    return {
        "organization_name": org.get("name") or DEFAULTS["organization_name"],
        "organization_id": str(org.get("id", "")),
        "location_address": org.get("address") or "",
        "business_hours": describe_hours(hours),
        "store_is_open": is_open,
        "store_status": status,
        **_clock(local),
    }


def _clock(local: datetime) -> dict:
    return {
        "current_time": local.strftime("%H:%M"),
        "current_day": DAY_NAMES[local.weekday()],
        "current_datetime": local.isoformat(timespec="minutes"),
    }


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _lead(lead: dict) -> dict:
    if not lead:
        return {}
    interest = lead.get("interest") or {}
    qualification = lead.get("qualification") or {}
    last = lead.get("last_contact_at")
    return {
        "customer_name": lead.get("name") or "",
        "has_customer_name": bool(lead.get("name")),
        "lead_status": lead.get("status") or "new",
        "bike_interest": _interest_text(interest),
        "qualification_status": str(
            qualification.get("qualification_status") or lead.get("status")
        ),
        "last_contact": last.isoformat(timespec="minutes") if last else "never",
    }


def _interest_text(interest: dict) -> str:
    preferred = interest.get("bike_interest") or interest.get("bike")
    if preferred:
        return str(preferred)
    return ", ".join(str(v) for v in interest.values() if v)[:200]


def _history(context: dict) -> dict:
    count = context.get("conversation_count") or 0
    lines = [f"{m['role']}: {m['body']}" for m in context.get("recent_messages") or []]
    text = "\n".join(lines)
    if len(text) > CONTEXT_LIMIT:  # keep the most recent part
        text = text[-CONTEXT_LIMIT:]
    summary = context.get("latest_summary") or ""
    last = context.get("last_conversation_at")
    history = DEFAULTS["customer_history"]
    if count:
        when = f"; the last on {last:%Y-%m-%d}" if last else ""
        history = f"{count} previous conversation{'s' if count != 1 else ''}{when}."
    return {
        "conversation_context": text,
        "previous_summary": summary[:SUMMARY_LIMIT],
        "last_topic": context.get("latest_title") or "",
        "interaction_count": count,
        "customer_history": history,
    }


def _greeting(variables: dict, outbound: bool) -> str:
    org = variables["organization_name"]
    name = variables["customer_name"]
    if outbound:
        return f"Hi{' ' + name if name else ''}, this is {org} calling."
    if name:
        return f"Hi {name}, welcome back to {org}! How can I help you today?"
    return f"Thanks for calling {org}! How can I help you today?"


def describe_hours(hours: dict) -> str:
    """ "Mon 09:00-18:00; ...; Sun closed" from {"mon": [["09:00", "18:00"]], ...}."""
    if not hours:
        return ""
    parts = []
    for day in DAYS:
        spans = hours.get(day) or []
        text = ", ".join(f"{start}-{end}" for start, end in spans) or "closed"
        parts.append(f"{day.capitalize()} {text}")
    return "; ".join(parts)


def store_status(hours: dict, local: datetime) -> tuple[bool, str]:
    """(open now?, "open until 18:00" / "closed, opens Tuesday at 09:00")."""
    if not hours:
        return False, "unknown"
    for start, end in _spans(hours, local.weekday()):
        if start <= local.time() < end:
            return True, f"open until {end:%H:%M}"
    for offset in range(0, 8):
        day = local + timedelta(days=offset)
        for start, _ in _spans(hours, day.weekday()):
            if offset or start > local.time():
                when = "today" if offset == 0 else DAY_NAMES[day.weekday()]
                return False, f"closed, opens {when} at {start:%H:%M}"
    return False, "closed"


def _spans(hours: dict, weekday: int) -> list[tuple[time, time]]:
    spans = []
    for span in hours.get(DAYS[weekday]) or []:
        try:
            start, end = (time.fromisoformat(part) for part in span)
        except (TypeError, ValueError):
            continue
        spans.append((start, end))
    return sorted(spans)
