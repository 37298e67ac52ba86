"""Silences and maintenance windows: which rule (or every rule) tells nobody, from when to
when, why and whose it is. The engine asks `covering` before it writes a transition's
notifications, the automatic rollback before it acts; people create and cancel silences from
the dashboard, the API and `manage.py silence`."""

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitoring.alerts.rules import default_rules
from monitoring.models import Silence

log = logging.getLogger(__name__)
WEEK = timedelta(days=7)
MAX_LENGTH = timedelta(days=31)


class Invalid(ValueError):
    """A silence that cannot be created, with what to change."""


def window_at(silence: Silence, at: datetime) -> tuple[datetime, datetime] | None:
    """The window of `silence` that contains `at`, or None."""
    if silence.cancelled_at is not None and silence.cancelled_at <= at:
        return None
    if at < silence.starts_at:
        return None
    start = silence.starts_at
    if silence.weekly:
        start += WEEK * ((at - silence.starts_at) // WEEK)
    end = start + (silence.ends_at - silence.starts_at)
    return (start, end) if start <= at < end else None


def next_window(silence: Silence, at: datetime) -> tuple[datetime, datetime] | None:
    """The window in force at `at`, else the next one to come, else None (it is over)."""
    current = window_at(silence, at)
    if current is not None:
        return current
    if silence.cancelled_at is not None and silence.cancelled_at <= at:
        return None
    if at < silence.starts_at:
        return silence.starts_at, silence.ends_at
    if not silence.weekly:
        return None
    start = silence.starts_at + WEEK * ((at - silence.starts_at) // WEEK + 1)
    return start, start + (silence.ends_at - silence.starts_at)


def covering(rule: str, at: datetime) -> Silence | None:
    """The silence in force for `rule` at `at` (the one ending last, if several)."""
    candidates = Silence.objects.filter(starts_at__lte=at).exclude(cancelled_at__lte=at)
    found = [
        (window[1], silence)
        for silence in candidates.filter(rule__in=["", rule])
        if (window := window_at(silence, at)) is not None
    ]
    return max(found, key=lambda pair: pair[0])[1] if found else None


def in_force_or_coming(at: datetime | None = None) -> list[tuple[Silence, datetime, datetime]]:
    """Every silence with a window now or later, soonest first, with that window."""
    at = at or timezone.now()
    rows = Silence.objects.exclude(cancelled_at__lte=at).filter(Q(weekly=True) | Q(ends_at__gt=at))
    shown = [(s, *window) for s in rows if (window := next_window(s, at)) is not None]
    return sorted(shown, key=lambda item: item[1])


def over(limit: int, at: datetime | None = None) -> list[Silence]:
    """The latest silences that ended or were cancelled, last ended first."""
    at = at or timezone.now()
    ended = Q(cancelled_at__lte=at) | Q(weekly=False, ends_at__lte=at)
    return list(Silence.objects.filter(ended).order_by("-ends_at", "-id")[:limit])


def rule_names() -> list[str]:
    return [rule.name for rule in default_rules()]


def create(
    *,
    rule: str,
    reason: str,
    owner: str,
    starts_at: datetime,
    ends_at: datetime,
    weekly: bool = False,
    actor: str,
) -> Silence:
    reason = (reason or "").strip()
    if not reason:
        raise Invalid("a silence needs a reason")
    if rule and rule not in rule_names():
        raise Invalid(f"no rule {rule!r}; the rules are {', '.join(rule_names())}")
    if ends_at <= starts_at:
        raise Invalid("a silence must end after it starts")
    if ends_at - starts_at > (WEEK if weekly else MAX_LENGTH):
        limit = "7 days for a weekly one" if weekly else "31 days"
        raise Invalid(f"a silence lasts at most {limit}")
    if not weekly and ends_at <= timezone.now():
        raise Invalid("that silence would already be over")
    silence = Silence.objects.create(
        rule=rule,
        reason=reason[:500],
        owner=(owner or actor)[:150],
        starts_at=starts_at,
        ends_at=ends_at,
        weekly=weekly,
        created_by=actor[:150],
    )
    log.warning("silence #%s created by %s: %s", silence.pk, actor, describe(silence))
    return silence


def cancel(silence_id: int, *, actor: str) -> Silence:
    """End a silence now (its row stays, with who ended it)."""
    with transaction.atomic():
        silence = Silence.objects.select_for_update().get(pk=silence_id)
        if silence.cancelled_at is None:
            silence.cancelled_at = timezone.now()
            silence.cancelled_by = actor[:150]
            silence.save(update_fields=["cancelled_at", "cancelled_by"])
            log.warning("silence #%s cancelled by %s", silence.pk, actor)
    return silence


def describe(silence: Silence) -> str:
    what = silence.rule or "every rule"
    when = f"{silence.starts_at:%Y-%m-%d %H:%M} to {silence.ends_at:%Y-%m-%d %H:%M} UTC"
    repeat = ", every week" if silence.weekly else ""
    return f"{what}, {when}{repeat}: {silence.reason} (owner {silence.owner})"


def as_dict(silence: Silence, at: datetime | None = None) -> dict:
    at = at or timezone.now()
    window = next_window(silence, at)
    return {
        "id": silence.pk,
        "rule": silence.rule or None,
        "reason": silence.reason,
        "owner": silence.owner,
        "starts_at": silence.starts_at.isoformat(),
        "ends_at": silence.ends_at.isoformat(),
        "weekly": silence.weekly,
        "in_force": window_at(silence, at) is not None,
        "next_window": [window[0].isoformat(), window[1].isoformat()] if window else None,
        "created_by": silence.created_by,
        "created_at": silence.created_at.isoformat(),
        "cancelled_by": silence.cancelled_by or None,
        "cancelled_at": silence.cancelled_at.isoformat() if silence.cancelled_at else None,
    }
