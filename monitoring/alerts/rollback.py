"""Automatic rollback (opt-in, AUTO_ROLLBACK): when a qualifying alert has fired for
AUTO_ROLLBACK_AFTER_SECONDS, the evaluator turns caching off through the switch service, as a
person would (audited, actor "system", the reason naming the alert), and tells every channel.
It never turns caching on, and does nothing while the environment pins the switch or a
silence covers the alert."""

import logging
from datetime import datetime, timedelta

from django.conf import settings

from monitoring.alerts import notify, silences
from monitoring.cache import controls, switch
from monitoring.models import Alert

log = logging.getLogger(__name__)
ACTOR = "system"
MODES = ("off", "redis_lost", "critical")


def qualifies(alert: Alert, mode: str) -> bool:
    if mode == "redis_lost":
        return alert.rule == "redis_connection_lost"
    return mode == "critical" and alert.severity == Alert.Severity.CRITICAL


def consider(now: datetime) -> Alert | None:
    """Roll back for the longest-firing qualifying alert, if any; that alert, or None."""
    mode = settings.AUTO_ROLLBACK
    if mode == "off":
        return None
    state = switch.read_state()
    if not state.enabled or not state.can_flip:
        return None
    due = now - timedelta(seconds=settings.AUTO_ROLLBACK_AFTER_SECONDS)
    firing = Alert.objects.filter(state=Alert.State.FIRING, fired_at__lte=due).order_by("fired_at")
    for alert in firing:
        if qualifies(alert, mode) and silences.covering(alert.rule, now) is None:
            return roll_back(alert, now)
    return None


def roll_back(alert: Alert, now: datetime) -> Alert | None:
    reason = reason_for(alert)
    try:
        controls.flip(False, actor=ACTOR, reason=reason, source="system")
    except (controls.Refused, switch.SwitchUnavailable) as exc:
        log.warning("automatic rollback not done: %s", exc)
        return None
    log.warning("automatic rollback: %s", reason)
    notify.enqueue(alert, "rollback", alert.value, now)
    return alert


def reason_for(alert: Alert) -> str:
    since = alert.fired_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"automatic rollback (AUTO_ROLLBACK={settings.AUTO_ROLLBACK}): alert #{alert.pk} "
        f"{alert.summary} firing since {since}"
    )


def rolled_back_by_system(state: switch.SwitchState) -> bool:
    """Whether caching is off because the automatic rollback turned it off."""
    return not state.enabled and state.can_flip and state.changed_by == ACTOR
