"""Incidents: alerts that overlap in time. An alert that opens while an incident is open
joins it, otherwise it opens one; the incident closes when its last open alert resolves. Its
timeline puts in one order everything that happened from shortly before it opened to shortly
after it closed: alert transitions, notifications and their delivery, acknowledgements,
people's notes, switch flips and flushes, breaker transitions and process starts and exits."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from monitoring.alerts import runbook
from monitoring.models import (
    Alert,
    AlertTransition,
    Incident,
    IncidentNote,
    MetricWindow,
    NotificationDelivery,
    ProcessEvent,
    SwitchAudit,
)

# What came just before and after an incident belongs to its story (the deploy that caused
# it, the flip that ended it).
MARGIN = timedelta(minutes=10)
OPEN_STATES = [Alert.State.PENDING, Alert.State.FIRING]


def joined_by_new_alert(title: str, now: datetime) -> Incident:
    """The open incident a new alert joins, or a new one (inside the alert's transaction)."""
    incident = Incident.objects.select_for_update().filter(closed_at__isnull=True).first()
    if incident is not None:
        return incident
    return Incident.objects.create(opened_at=now, title=title[:300])


def close_if_over(incident_id: int | None, now: datetime) -> None:
    """Close the incident once none of its alerts is open (its alert just resolved)."""
    if incident_id is None:
        return
    if Alert.objects.filter(incident_id=incident_id, state__in=OPEN_STATES).exists():
        return
    Incident.objects.filter(pk=incident_id, closed_at__isnull=True).update(closed_at=now)


def add_note(incident_id: int, author: str, text: str) -> IncidentNote:
    text = (text or "").strip()
    if not text:
        raise ValueError("a note needs some text")
    incident = Incident.objects.get(pk=incident_id)
    return IncidentNote.objects.create(incident=incident, author=author[:150], text=text[:2000])


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str  # alert, notification, acknowledgement, note, switch, breaker, process
    text: str
    link: str = ""


def span(incident: Incident, now: datetime | None = None) -> tuple[datetime, datetime]:
    end = incident.closed_at or now or timezone.now()
    return incident.opened_at - MARGIN, end + MARGIN


def timeline(incident: Incident, now: datetime | None = None) -> list[Entry]:
    start, end = span(incident, now)
    alerts = list(incident.alerts.all())
    entries = (
        _transitions(alerts)
        + _deliveries(alerts)
        + _acknowledgements(alerts)
        + _notes(incident)
        + _switch_changes(start, end)
        + _breaker_changes(start, end)
        + _processes(start, end)
    )
    return sorted(entries, key=lambda entry: entry.at)


def _transitions(alerts: list[Alert]) -> list[Entry]:
    rows = AlertTransition.objects.filter(alert__in=alerts).select_related("alert")
    return [
        Entry(
            t.at,
            "alert",
            f"{t.alert.rule}: {t.from_state or 'opened'} → {t.to_state}"
            + (f" (value {t.value:g})" if t.value is not None else "")
            + (f"; {t.note}" if t.note else ""),
            runbook.link(t.alert.rule),
        )
        for t in rows
    ]


def _deliveries(alerts: list[Alert]) -> list[Entry]:
    rows = NotificationDelivery.objects.filter(alert__in=alerts).select_related("alert")
    return [
        Entry(
            d.at,
            "notification",
            f"{d.channel} told of {d.alert.rule} {d.event}: {d.status} (attempt {d.attempt})"
            + (f": {d.error}" if d.error else ""),
        )
        for d in rows
    ]


def _acknowledgements(alerts: list[Alert]) -> list[Entry]:
    return [
        Entry(
            a.acknowledged_at,
            "acknowledgement",
            f"{a.acknowledged_by} acknowledged {a.rule}"
            + (f": “{a.acknowledgement_note}”" if a.acknowledgement_note else ""),
        )
        for a in alerts
        if a.acknowledged_at is not None
    ]


def _notes(incident: Incident) -> list[Entry]:
    return [Entry(n.at, "note", f"{n.author}: {n.text}") for n in incident.notes.all()]


def _switch_changes(start: datetime, end: datetime) -> list[Entry]:
    rows = SwitchAudit.objects.filter(at__gte=start, at__lte=end)
    return [
        Entry(a.at, "switch", f"{a.actor} ({a.source}): {a.get_action_display()} — {a.reason}")
        for a in rows
    ]


def breaker_changes(start: datetime, end: datetime) -> list[tuple[datetime, str, str, str]]:
    """(when, process, from, to) of every breaker transition the windows recorded."""
    found = []
    windows = MetricWindow.objects.filter(ended_at__gte=start, started_at__lte=end + MARGIN)
    for window in windows.only("process", "data"):
        for at, old, new in window.data.get("breaker", {}).get("changes", []):
            moment = datetime.fromtimestamp(at, tz=UTC)
            if start <= moment <= end:
                found.append((moment, window.process, old, new))
    return found


def _breaker_changes(start: datetime, end: datetime) -> list[Entry]:
    return [
        Entry(at, "breaker", f"breaker in {process}: {old} → {new}")
        for at, process, old, new in breaker_changes(start, end)
    ]


def _processes(start: datetime, end: datetime) -> list[Entry]:
    rows = ProcessEvent.objects.filter(at__gte=start, at__lte=end)
    verb = {ProcessEvent.Kind.START: "started", ProcessEvent.Kind.EXIT: "exited"}
    return [Entry(p.at, "process", f"{p.role} process {p.process} {verb[p.kind]}") for p in rows]


def recent(limit: int = 50) -> list[Incident]:
    return list(Incident.objects.prefetch_related("alerts")[:limit])


def covering(start: datetime, end: datetime) -> list[Incident]:
    """Incidents open at some time between `start` and `end` (the charts' marks)."""
    overlapping = Q(opened_at__lte=end) & (Q(closed_at__isnull=True) | Q(closed_at__gte=start))
    return list(Incident.objects.filter(overlapping).order_by("opened_at"))


def chart_marks(start: datetime, end: datetime) -> list[dict]:
    """What the charts mark at its time: switch flips and flushes, incidents (from their
    opening to their closing), and process starts and exits (deploys)."""
    marks = [
        {
            "at": a.at.isoformat(),
            "kind": "switch",
            "label": f"{a.get_action_display()} by {a.actor}",
        }
        for a in SwitchAudit.objects.filter(at__gte=start, at__lte=end).order_by("at")
    ]
    marks += [
        {
            "at": i.opened_at.isoformat(),
            "until": i.closed_at.isoformat() if i.closed_at else None,
            "kind": "incident",
            "label": f"incident #{i.pk}: {i.title}",
        }
        for i in covering(start, end)
    ]
    marks += [
        {"at": p.at.isoformat(), "kind": "deploy", "label": f"{p.role} {p.process} {p.kind}"}
        for p in ProcessEvent.objects.filter(at__gte=start, at__lte=end).order_by("at")
    ]
    return marks
