"""The alert lifecycle: pending (condition seen, waiting its `for` duration) -> firing ->
resolved, one open alert per rule, every transition kept with the value that caused it and,
in the same transaction, the notifications it owes (monitoring.alerts.notify)."""

from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction

from monitoring.alerts import incidents, notify, silences
from monitoring.alerts.rules import Rule, Sample
from monitoring.models import Alert, AlertTransition


@dataclass(frozen=True)
class Transition:
    alert: Alert
    from_state: str
    to_state: str
    value: float | None

    @property
    def notifies(self) -> bool:
        """Firing and resolving a fired alert are told; a pending that went away is not."""
        return self.to_state == Alert.State.FIRING or self.from_state == Alert.State.FIRING


def evaluate(rules: list[Rule], sample: Sample, now: datetime) -> list[Transition]:
    transitions = []
    for rule in rules:
        value = rule.measure(sample)
        try:
            with transaction.atomic():
                transitions += step(rule, value, now)
        except IntegrityError:
            # Another evaluator opened this rule's alert first: it owns this round.
            continue
    return transitions


def step(rule: Rule, value: float | None, now: datetime) -> list[Transition]:
    alert = Alert.objects.select_for_update().filter(rule=rule.name, state__in=OPEN).first()
    if alert is None:
        if not rule.breaching(value):
            return []
        alert = Alert.objects.create(
            rule=rule.name,
            severity=rule.severity,
            state=Alert.State.PENDING,
            summary=rule.summary.format(threshold=rule.threshold),
            value=value,
            threshold=rule.threshold,
            started_at=now,
            breaching_since=now,
            incident=incidents.joined_by_new_alert(
                rule.summary.format(threshold=rule.threshold), now
            ),
        )
        opened = [_move(alert, "", Alert.State.PENDING, value, now)]
        return opened + _fire_if_due(rule, alert, value, now)
    alert.value = value if value is not None else alert.value
    if alert.state == Alert.State.PENDING:
        if rule.breaching(value):
            alert.breaching_since = alert.breaching_since or now
            return _fire_if_due(rule, alert, value, now)
        if rule.cleared(value):
            return [_resolve(alert, value, now, note="condition passed before its for duration")]
        # Back inside the threshold but not yet clear: still pending, and the `for` clock
        # starts again at the next breach (the condition must hold for the whole duration).
        alert.breaching_since = None
        alert.save(update_fields=["value", "breaching_since"])
        return []
    if rule.cleared(value):
        return [_resolve(alert, value, now)]
    alert.save(update_fields=["value"])
    return []


OPEN = [Alert.State.PENDING, Alert.State.FIRING]


def _fire_if_due(rule: Rule, alert: Alert, value, now) -> list[Transition]:
    if (now - alert.breaching_since).total_seconds() < rule.for_seconds:
        alert.save(update_fields=["value", "breaching_since"])
        return []
    alert.state = Alert.State.FIRING
    alert.fired_at = now
    alert.save(update_fields=["state", "fired_at", "value"])
    return [_move(alert, Alert.State.PENDING, Alert.State.FIRING, value, now)]


def _resolve(alert: Alert, value, now, note: str = "") -> Transition:
    before = alert.state
    alert.state = Alert.State.RESOLVED
    alert.resolved_at = now
    alert.save(update_fields=["state", "resolved_at", "value"])
    incidents.close_if_over(alert.incident_id, now)
    return _move(alert, before, Alert.State.RESOLVED, value, now, note)


def _move(alert: Alert, before: str, after: str, value, now, note: str = "") -> Transition:
    transition = Transition(alert, before, after, value)
    silence = silences.covering(alert.rule, now) if transition.notifies else None
    if silence is not None:
        note = f"{note}; " if note else ""
        note += f"notifications silenced by silence #{silence.pk} ({silence.reason})"
    AlertTransition.objects.create(
        alert=alert, at=now, from_state=before, to_state=after, value=value, note=note[:300]
    )
    if transition.notifies and silence is None:
        notify.enqueue_transition(alert, after, value, now)
    return transition


def acknowledge(alert_id: int, who: str, note: str, now: datetime) -> Alert:
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        alert.acknowledged_at = now
        alert.acknowledged_by = who
        alert.acknowledgement_note = note[:500]
        alert.save(update_fields=["acknowledged_at", "acknowledged_by", "acknowledgement_note"])
        if alert.state == Alert.State.FIRING:
            # Only a firing alert was told; a pager (PagerDuty) then stops escalating it.
            notify.enqueue_acknowledgement(alert, now)
    return alert
