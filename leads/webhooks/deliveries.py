"""The webhook-event table: record each delivery under the provider's id, process it once,
keep failures (with their error) for `manage.py replay_webhooks`."""

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from leads.models import WebhookEvent
from monitoring import counters

log = logging.getLogger(__name__)

DONE = {WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED}


@dataclass
class Outcome:
    event: WebhookEvent
    duplicate: bool = False
    failed: bool = False
    result: Any = None


class Ignored(Exception):
    """Raised by a handler for a delivery that is accepted but deliberately not acted on."""


def record(provider: str, event_type: str, key: str, payload: dict) -> tuple[WebhookEvent, bool]:
    """Store the delivery; returns (event, is_duplicate). A delivery already processed (or
    ignored) is a duplicate; one that failed before is processed again."""
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                provider=provider, event_type=event_type, idempotency_key=key, payload=payload
            )
        return event, False
    except IntegrityError:
        event = WebhookEvent.objects.get(provider=provider, idempotency_key=key)
    if event.status in DONE:
        WebhookEvent.objects.filter(pk=event.pk).update(duplicates=F("duplicates") + 1)
        counters.increment(f"webhook.{provider}.duplicate")
        return event, True
    return event, False


def process(event: WebhookEvent, handler: Callable[[dict], Any]) -> Outcome:
    """Run the handler once per delivery (the row is locked while it runs, so two concurrent
    copies of one delivery cannot both act). A handler failure rolls its writes back and is
    recorded on the row, never raised."""
    try:
        with transaction.atomic():
            locked = WebhookEvent.objects.select_for_update().get(pk=event.pk)
            if locked.status in DONE:
                return Outcome(locked, duplicate=True)
            try:
                result = handler(locked.payload)
                status, note = WebhookEvent.Status.PROCESSED, ""
            except Ignored as why:
                result, status, note = None, WebhookEvent.Status.IGNORED, str(why)
            _finish(locked, status, note)
        counters.increment(f"webhook.{event.provider}.{status}")
        return Outcome(locked, result=result)
    except Exception as exc:  # any handler bug: the delivery is kept for replay, not lost
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        log.exception("webhook %s %s failed", event.provider, event.idempotency_key)
        try:
            _mark_failed(event, error)
        except DatabaseError:
            log.error("webhook %s %s: could not record the failure", event.provider, event.pk)
        counters.increment(f"webhook.{event.provider}.failed")
        return Outcome(event, failed=True)


def _finish(event: WebhookEvent, status: str, note: str) -> None:
    event.status = status
    event.error = note
    event.attempts += 1
    event.processed_at = timezone.now()
    event.save(update_fields=["status", "error", "attempts", "processed_at"])


def _mark_failed(event: WebhookEvent, error: str) -> None:
    WebhookEvent.objects.filter(pk=event.pk).update(
        status=WebhookEvent.Status.FAILED, error=error[:4000], attempts=F("attempts") + 1
    )
    event.refresh_from_db()
