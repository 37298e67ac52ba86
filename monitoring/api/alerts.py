"""Alerts as the API and the dashboard show them."""

from datetime import datetime

from django.db.models import Count, Q, QuerySet

from monitoring.models import Alert

STATES = {
    "active": [Alert.State.PENDING, Alert.State.FIRING],
    "firing": [Alert.State.FIRING],
    "pending": [Alert.State.PENDING],
    "resolved": [Alert.State.RESOLVED],
    "all": None,
}


STILL_OPEN = Q(resolved_at__isnull=True)


def filtered_alerts(state: str, severity: str = "", since: datetime | None = None) -> QuerySet:
    """Alerts in `state` (a key of STATES), of `severity` ("" for any), open at some time since
    `since` (None for any time), newest first."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    if severity and severity not in Alert.Severity.values:
        raise ValueError(f"severity must be one of {', '.join(Alert.Severity.values)}")
    alerts = Alert.objects.prefetch_related("transitions", "deliveries", "notifications")
    if STATES[state] is not None:
        alerts = alerts.filter(state__in=STATES[state])
    if severity:
        alerts = alerts.filter(severity=severity)
    if since is not None:
        alerts = alerts.filter(Q(started_at__gte=since) | Q(resolved_at__gte=since) | STILL_OPEN)
    return alerts


def alert_list(state: str, severity: str = "", limit: int = 100) -> dict:
    alerts = filtered_alerts(state, severity)
    counts = dict(alerts.values_list("severity").annotate(n=Count("id")).order_by())
    return {
        "state": state,
        "counts": {s: counts.get(s, 0) for s in Alert.Severity.values},
        "alerts": [alert_dict(a) for a in alerts[: max(1, min(limit, 1000))]],
    }


def alert_dict(alert: Alert) -> dict:
    return {
        "id": alert.id,
        "rule": alert.rule,
        "severity": alert.severity,
        "state": alert.state,
        "summary": alert.summary,
        "value": alert.value,
        "threshold": alert.threshold,
        "started_at": _iso(alert.started_at),
        "fired_at": _iso(alert.fired_at),
        "resolved_at": _iso(alert.resolved_at),
        "acknowledged": {
            "by": alert.acknowledged_by,
            "at": _iso(alert.acknowledged_at),
            "note": alert.acknowledgement_note,
        }
        if alert.acknowledged_at
        else None,
        "transitions": [
            {
                "at": _iso(t.at),
                "from": t.from_state,
                "to": t.to_state,
                "value": t.value,
                "note": t.note,
            }
            for t in alert.transitions.all()
        ],
        "notifications": [
            {
                "at": _iso(d.at),
                "channel": d.channel,
                "event": d.event,
                "attempt": d.attempt,
                "status": d.status,
                "error": d.error,
            }
            for d in alert.deliveries.all()
        ],
        # The outbox: one message per channel and told transition, with where its sending is.
        "messages": [
            {
                "channel": n.channel,
                "event": n.event,
                "status": n.status,
                "attempts": n.attempts,
                "due_at": _iso(n.due_at),
                "finished_at": _iso(n.finished_at),
                "last_error": n.last_error,
            }
            for n in alert.notifications.all()
        ],
    }


def _iso(value):
    return value.isoformat() if value else None
