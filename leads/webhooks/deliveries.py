"""The webhook-event table: record each delivery under the provider's id, process it once,
keep failures (with their error) for `manage.py replay_webhooks`."""

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from leads.models import WebhookEvent
from leads.services import rewarm
from leads.webhooks.deferred import writer
from monitoring import counters

log = logging.getLogger(__name__)

DONE = {WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED}


@dataclass
class Outcome:
    event: WebhookEvent
    duplicate: bool = False
    failed: bool = False
    result: Any = None
    repeated: bool = False  # recorded before, and done: nothing was run


class Ignored(Exception):
    """Raised by a handler for a delivery that is accepted but deliberately not acted on."""


def receive(
    provider: str, event_type: str, key: str, payload: dict, handler: Callable[[dict], Any]
) -> Outcome:
    """Record a delivery and run its handler once, with the caller's re-warm left to the
    background writer. A new delivery costs one transaction: its row inserted already done
    (the insert is also the idempotency check: a concurrent copy waits on it, then finds the
    row) and the handler's writes. Anything else (a delivery seen before, a handler failure,
    which rolls that transaction back) goes through `record` and `process`, which count a
    duplicate, process a failed delivery again, and keep a failure with its error. Raises
    DatabaseError only when the delivery could not be recorded at all."""
    with rewarm.deferred_to(writer.submit):
        try:
            outcome = _in_one_transaction(provider, event_type, key, payload, handler)
        except Exception:  # noqa: BLE001 - rolled back; recorded with its error just below
            outcome = None
        if outcome is not None:
            counters.increment(f"webhook.{provider}.{outcome.event.status}")
            return outcome
        event, duplicate = record(provider, event_type, key, payload)
        if duplicate:
            return Outcome(event, repeated=True)
        return process(event, handler)


def _in_one_transaction(provider, event_type, key, payload, handler) -> Outcome | None:
    """None when the delivery is recorded already (nothing written)."""
    with transaction.atomic():
        event = _insert_new(
            WebhookEvent(
                provider=provider,
                event_type=event_type,
                idempotency_key=key,
                payload=payload,
                status=WebhookEvent.Status.PROCESSED,
                attempts=1,
                processed_at=timezone.now(),
            )
        )
        if event is None:
            return None
        try:
            result = handler(payload)
        except Ignored as why:
            result, event.status, event.error = None, WebhookEvent.Status.IGNORED, str(why)
            event.save(update_fields=["status", "error"])
    return Outcome(event, result=result)


def _insert_new(event: WebhookEvent) -> WebhookEvent | None:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id: the event with its id, or None when a
    row with its delivery key exists (the ORM's own conflict handling returns no id)."""
    meta = WebhookEvent._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    values = [f.get_db_prep_save(f.pre_save(event, add=True), connection) for f in fields]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"
        f" VALUES ({', '.join(['%s'] * len(fields))})"
        f" ON CONFLICT DO NOTHING RETURNING {quote(meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if row is None:
        return None
    event.pk = row[0]
    event._state.adding = False
    return event


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
