"""Telling people: each transition that matters goes to every configured channel, with
bounded retries and one delivery row per attempt; a permanent error stops that channel."""

import logging
import time

from django.conf import settings

from monitoring.alerts.engine import Transition
from monitoring.alerts.transports import Transport, TransportError, configured_transports
from monitoring.models import Alert, NotificationDelivery

log = logging.getLogger(__name__)
RETRY_DELAYS = (0.5, 2.0, 5.0)


def notify_transition(transition: Transition, transports: list[Transport] | None = None) -> None:
    if not transition.notifies:
        return
    event = "firing" if transition.to_state == Alert.State.FIRING else "resolved"
    context = {
        "alert": transition.alert,
        "event": event,
        "value": transition.value,
        "dashboard_url": f"{settings.PUBLIC_BASE_URL}/dashboard/alerts/",
    }
    for transport in configured_transports() if transports is None else transports:
        deliver(transport, context, transition.alert, event)


def send_test_notification() -> dict[str, str]:
    """Send a test message through every configured channel; the outcome per channel."""
    return {
        transport.name: deliver(transport, {"event": "test"}, None, "test")
        for transport in configured_transports()
    }


def deliver(transport: Transport, context: dict, alert: Alert | None, event: str) -> str:
    attempts = max(1, settings.NOTIFICATION_RETRIES)
    for attempt in range(1, attempts + 1):
        try:
            transport.notify(context)
        except TransportError as exc:
            status = NotificationDelivery.Status.REJECTED if exc.permanent else "failed"
            _log(alert, transport, event, attempt, status, str(exc))
            if exc.permanent or attempt == attempts:
                log.warning("%s notification %s: %s", transport.name, status, exc)
                return status
            time.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1])
        else:
            _log(alert, transport, event, attempt, NotificationDelivery.Status.SENT, "")
            return NotificationDelivery.Status.SENT
    return NotificationDelivery.Status.FAILED


def _log(alert, transport, event, attempt, status, error) -> None:
    NotificationDelivery.objects.create(
        alert=alert,
        channel=transport.name,
        event=event,
        attempt=attempt,
        status=status,
        error=error[:500],
    )
