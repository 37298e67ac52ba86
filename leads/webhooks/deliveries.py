"""The webhook-event table: record each delivery under the provider's id, process it once,
keep failures (with their error) for `manage.py replay_webhooks`."""

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connection, transaction
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
    row) and the handler's writes; a repeat of one done is counted in that transaction. A
    delivery that failed before is processed again by `process`; a handler failure rolls the
    transaction back, and the delivery is stored failed with its error, for replay. Raises
    DatabaseError only when nothing could be recorded."""
    with rewarm.deferred_to(writer.submit):
        try:
            outcome = _in_one_transaction(provider, event_type, key, payload, handler)
        except HandlerFailed as failed:
            return _record_failure(provider, event_type, key, payload, handler, failed.__cause__)
        except Exception:  # noqa: BLE001 - not recorded: the old path records it, or raises
            outcome = None
        if outcome is None:
            event, duplicate = record(provider, event_type, key, payload)
            return Outcome(event, repeated=True) if duplicate else process(event, handler)
        if outcome.result is _AGAIN:
            return process(outcome.event, handler)
        if not outcome.repeated:
            counters.increment(f"webhook.{provider}.{outcome.event.status}")
        return outcome


# A delivery recorded before and not done (it failed): processed again, as `process` does.
_AGAIN = object()


class HandlerFailed(Exception):
    """The handler raised (the exception is its cause): its transaction is rolled back."""


def _in_one_transaction(provider, event_type, key, payload, handler) -> Outcome:
    with transaction.atomic():
        event, duplicate = record(provider, event_type, key, payload, done=True)
        if duplicate:
            return Outcome(event, repeated=True)
        if event.status != WebhookEvent.Status.PROCESSED:  # recorded before, not done
            return Outcome(event, result=_AGAIN)
        try:
            result = handler(payload)
        except Ignored as why:
            result, event.status, event.error = None, WebhookEvent.Status.IGNORED, str(why)
            event.save(update_fields=["status", "error"])
        except Exception as exc:
            raise HandlerFailed from exc
    return Outcome(event, result=result)


def _record_failure(provider, event_type, key, payload, handler, exc) -> Outcome:
    """The delivery stored as failed, with its error, for `replay_webhooks` (as `process`
    records a failure); the old path if a concurrent copy stored it meanwhile."""
    log.error("webhook %s %s failed", provider, key, exc_info=exc)
    event = WebhookEvent(
        provider=provider,
        event_type=event_type,
        idempotency_key=key,
        payload=payload,
        status=WebhookEvent.Status.FAILED,
        error=_error_text(exc)[:4000],
        attempts=1,
    )
    with transaction.atomic(savepoint=False):
        inserted = _insert_new(event)
    if not inserted:
        event, duplicate = record(provider, event_type, key, payload)
        return Outcome(event, repeated=True) if duplicate else process(event, handler)
    counters.increment(f"webhook.{provider}.failed")
    return Outcome(event, failed=True)


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def record(
    provider: str, event_type: str, key: str, payload: dict, *, done: bool = False
) -> tuple[WebhookEvent, bool]:
    """Store the delivery; returns (event, is_duplicate). A delivery already processed (or
    ignored) is a duplicate, counted on its row; one that failed before is processed again.
    `done`: stored as processed (its handler runs in the caller's transaction, which rolls
    the row back with the handler's writes if it fails)."""
    fields = {"status": WebhookEvent.Status.PROCESSED, "attempts": 1} if done else {}
    if done:
        fields["processed_at"] = timezone.now()
    with transaction.atomic(savepoint=False):
        new = WebhookEvent(
            provider=provider, event_type=event_type, idempotency_key=key, payload=payload, **fields
        )
        if _insert_new(new):
            return new, False
        # The row exists (or a concurrent copy's insert just committed it): locked, so that
        # two copies cannot both count or process it.
        event = WebhookEvent.objects.select_for_update().get(provider=provider, idempotency_key=key)
        if event.status not in DONE:
            return event, False
        WebhookEvent.objects.filter(pk=event.pk).update(duplicates=F("duplicates") + 1)
    counters.increment(f"webhook.{provider}.duplicate")
    return event, True


def _insert_new(event: WebhookEvent) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id: True (the event given its id) when the
    row was inserted, False when one with its delivery key exists. (The ORM's own conflict
    handling returns no id.)"""
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
        return False
    event.pk = row[0]
    event._state.adding = False
    return True


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
        error = _error_text(exc)
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
