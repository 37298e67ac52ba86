"""Telling people, second half: the delivery worker sends the outbox (monitoring.models.
Notification) one row at a time. A row is claimed in a short transaction (SKIP LOCKED where the
database has it, and a compare-and-set on the claim everywhere), sent outside any transaction,
then marked sent, given up on (a permanent error, or its last attempt), or put back with a
doubling delay; it waits while an older row of its alert and channel is pending. A worker that
dies mid-send leaves a claim that lapses, so another sends it."""

import logging
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from monitoring.alerts.notify import message_context
from monitoring.alerts.transports import Transport, TransportError, configured_transports
from monitoring.models import Notification, NotificationDelivery

log = logging.getLogger(__name__)
BACKOFF_CAP_SECONDS = 300.0
# Rows one round sends at most, so a stop request is seen between them.
ROUND_LIMIT = 50


def deliver_due(now: datetime | None = None) -> int:
    """Send every row that is due (at most ROUND_LIMIT); how many were attempted."""
    sent = 0
    while sent < ROUND_LIMIT:
        moment = now or timezone.now()
        notification = claim(moment)
        if notification is None:
            break
        send(notification, moment)
        sent += 1
    return sent


def claim(now: datetime) -> Notification | None:
    due = Q(status=Notification.Status.PENDING, due_at__lte=now) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )
    # One alert's messages reach a channel in the order they were written: a resolve that
    # overtook its trigger's retry would leave a PagerDuty incident open for good.
    earlier = Notification.objects.filter(
        alert=OuterRef("alert"),
        channel=OuterRef("channel"),
        status=Notification.Status.PENDING,
        id__lt=OuterRef("id"),
    )
    until = now + timedelta(seconds=claim_seconds())
    with transaction.atomic():
        rows = Notification.objects.filter(due & ~Exists(earlier)).order_by("due_at", "id")
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True)
        notification = rows.select_related("alert").first()
        if notification is None:
            return None
        # The compare-and-set keeps two workers from taking one row where nothing is locked.
        taken = Notification.objects.filter(
            pk=notification.pk, claimed_until=notification.claimed_until
        ).update(claimed_until=until)
    if not taken:
        return None
    notification.claimed_until = until
    return notification


def claim_seconds() -> float:
    """Longer than one attempt can take (an HTTP or SMTP timeout, with room to spare)."""
    return 2 * max(settings.NOTIFICATION_TIMEOUT, settings.EMAIL_TIMEOUT) + 5


def send(notification: Notification, now: datetime) -> str:
    attempt = notification.attempts + 1
    transport = channel(notification.channel)
    context = message_context(notification.alert, notification.event, notification.value)
    try:
        if transport is None:
            raise TransportError("channel no longer configured", permanent=True)
        transport.notify(context)
    except TransportError as exc:
        return _failed(notification, attempt, now, str(exc), permanent=exc.permanent)
    except Exception as exc:  # a bug in a transport must not wedge the row: a failed attempt
        log.exception("%s notification raised", notification.channel)
        error = f"{type(exc).__name__}: {exc}"
        return _failed(notification, attempt, now, error, permanent=False)
    _record(notification, attempt, NotificationDelivery.Status.SENT, "")
    _finish(notification, attempt, now, Notification.Status.SENT, "")
    return NotificationDelivery.Status.SENT


def channel(name: str) -> Transport | None:
    return next((t for t in configured_transports() if t.name == name), None)


def backoff(attempt: int) -> float:
    """Seconds before the attempt after `attempt`: the base, doubling, capped."""
    base = settings.NOTIFICATION_BACKOFF_SECONDS
    return min(base * 2 ** (attempt - 1), BACKOFF_CAP_SECONDS)


def _failed(
    notification: Notification, attempt: int, now: datetime, error: str, permanent: bool
) -> str:
    status = (
        NotificationDelivery.Status.REJECTED if permanent else NotificationDelivery.Status.FAILED
    )
    _record(notification, attempt, status, error)
    if permanent or attempt >= max(1, settings.NOTIFICATION_RETRIES):
        log.warning(
            "%s notification given up after %d attempts: %s", notification.channel, attempt, error
        )
        _finish(notification, attempt, now, Notification.Status.FAILED, error)
        return status
    Notification.objects.filter(pk=notification.pk).update(
        attempts=attempt,
        last_error=error[:500],
        claimed_until=None,
        due_at=now + timedelta(seconds=backoff(attempt)),
    )
    return status


def _finish(
    notification: Notification, attempt: int, now: datetime, status: str, error: str
) -> None:
    Notification.objects.filter(pk=notification.pk).update(
        attempts=attempt,
        status=status,
        last_error=error[:500],
        claimed_until=None,
        finished_at=now,
    )


def _record(notification: Notification, attempt: int, status: str, error: str) -> None:
    NotificationDelivery.objects.create(
        alert_id=notification.alert_id,
        notification=notification,
        channel=notification.channel,
        event=notification.event,
        attempt=attempt,
        status=status,
        error=error[:500],
    )


def channel_health() -> list[dict]:
    """Per configured channel: its last finished message's outcome, and how many wait. A
    channel whose last message was given up on is failing until one is sent."""
    health = []
    for name in [transport.name for transport in configured_transports()]:
        rows = Notification.objects.filter(channel=name)
        last = rows.exclude(status=Notification.Status.PENDING).order_by("-finished_at").first()
        health.append(
            {
                "channel": name,
                "failing": last is not None and last.status == Notification.Status.FAILED,
                "last_status": last.status if last else None,
                "last_error": last.last_error if last else "",
                "last_at": last.finished_at if last else None,
                "last_alert_id": last.alert_id if last else None,
                "pending": rows.filter(status=Notification.Status.PENDING).count(),
            }
        )
    return health


def overdue(seconds: float) -> int:
    """Messages due for longer than `seconds` and not being sent."""
    now = timezone.now()
    return (
        Notification.objects.filter(
            status=Notification.Status.PENDING, due_at__lt=now - timedelta(seconds=seconds)
        )
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .count()
    )


class DeliveryWorker(threading.Thread):
    """Sends the outbox every NOTIFICATION_POLL_SECONDS; any number may run (claims keep them
    from sending one row twice)."""

    def __init__(self) -> None:
        super().__init__(name="opsdash-notifications", daemon=True)
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(settings.NOTIFICATION_POLL_SECONDS):
            self.round()

    def round(self) -> int:
        try:
            return deliver_due()
        except DatabaseError:
            log.warning("notifications: database unreachable, round skipped")
            return 0
        except Exception:  # the loop must outlive any one round's bug: logged, next round runs
            log.exception("notifications: round failed")
            return 0
        finally:
            close_old_connections()

    def stop(self) -> None:
        self._stopping.set()
