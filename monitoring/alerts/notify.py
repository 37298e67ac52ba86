"""Telling people, first half: each transition that matters, and each acknowledgement of a
firing alert, becomes one outbox row per configured channel told of that event, written in the
transition's (or the acknowledgement's) own transaction (monitoring.alerts.engine), so no alert
is told twice or lost and the evaluator never waits on a transport. The delivery worker
(monitoring.alerts.delivery) sends them."""

from datetime import datetime

from django.conf import settings
from django.urls import reverse

from monitoring.alerts.transports import TransportError, configured_transports
from monitoring.models import Alert, Notification, NotificationDelivery


def enqueue(alert: Alert, event: str, value: float | None, now: datetime) -> list[Notification]:
    """The outbox rows of one told event ("firing", "resolved", or "acknowledged"), due at once:
    one per configured channel that is told of that event."""
    rows = [
        Notification(alert=alert, channel=t.name, event=event, value=value, due_at=now)
        for t in configured_transports()
        if event in t.events
    ]
    return Notification.objects.bulk_create(rows)


def enqueue_transition(alert: Alert, to_state: str, value, now: datetime) -> list[Notification]:
    """A firing is told; a resolve only to whom its firing was told (not one a silence kept
    quiet)."""
    if to_state == Alert.State.FIRING:
        return enqueue(alert, "firing", value, now)
    return enqueue_after_firing(alert, "resolved", value, now)


def enqueue_acknowledgement(alert: Alert, now: datetime) -> list[Notification]:
    """An acknowledgement, told where the firing was (not when a silence kept it quiet)."""
    return enqueue_after_firing(alert, "acknowledged", alert.value, now)


def enqueue_after_firing(alert: Alert, event: str, value, now: datetime) -> list[Notification]:
    """`event` of an alert whose firing was told; nothing for one whose firing was not."""
    if not Notification.objects.filter(alert=alert, event="firing").exists():
        return []
    return enqueue(alert, event, value, now)


def message_context(alert: Alert | None, event: str, value: float | None = None) -> dict:
    """What the message templates show; every alert message links to that alert's page."""
    if alert is None:
        return {"event": event}
    path = reverse("dashboard:alert-detail", args=[alert.pk])
    return {
        "alert": alert,
        "event": event,
        "value": value,
        "dashboard_url": f"{settings.PUBLIC_BASE_URL}{path}",
        "switch_url": f"{settings.PUBLIC_BASE_URL}{reverse('dashboard:overview')}#switch",
    }


def send_test_notification() -> dict[str, str]:
    """One test message through every configured channel, now (an operator waits for the
    answer): the outcome per channel, each attempt kept as a delivery row."""
    outcomes = {}
    for transport in configured_transports():
        try:
            transport.notify(message_context(None, "test"))
        except TransportError as exc:
            status = "rejected" if exc.permanent else "failed"
            error = str(exc)
        else:
            status, error = "sent", ""
        NotificationDelivery.objects.create(
            channel=transport.name, event="test", attempt=1, status=status, error=error[:500]
        )
        outcomes[transport.name] = status
    return outcomes
