"""Answered calls, from the answer to their rows. The answer path appends the call to the spool
(leads.webhooks.spool: one write, no SQL) and returns; the calls are recorded from the spool in
batches (leads.webhooks.initiation_records.record_initiations), by this process's writer threads or,
with RECORD_WORKER on, by `manage.py record_worker` only: then nothing of the recording runs
in the answering process's interpreter. A batch that fails leaves its file for the next try;
recording is idempotent (by call SID, else by the answer's id), so a file recorded again
records nothing twice."""

import atexit
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from leads.webhooks import spool
from leads.webhooks.deferred import writer
from leads.webhooks.initiation_records import Call, record_initiations
from monitoring import counters

log = logging.getLogger(__name__)


def as_record(call) -> dict:
    organization_id, customer, lead_id, payload, started_at, answer = call
    return {
        "organization_id": organization_id,
        "customer": customer,
        "lead_id": lead_id,
        "payload": payload,
        "started_at": started_at.isoformat(),
        "answer": answer,
    }


def as_call(record: dict):

    return Call(
        record["organization_id"],
        record["customer"],
        record["lead_id"],
        record["payload"],
        datetime.fromisoformat(record["started_at"]),
        record.get("answer"),
    )


async def asubmit(call) -> None:
    """The answer path's part: the call into the spool (and this process's writer threads told,
    unless the record worker records). If the spool cannot be written, the call is handed to
    the writer threads in memory, as before the spool."""
    try:
        spool.writer.append(as_record(call))
    except OSError as exc:
        counters.increment("recording.spool_failed")
        log.error("spool: cannot append (%s); recording this call from memory", exc)

        await writer.asubmit_batched(record_initiations, call)
        return
    if not settings.RECORD_WORKER:
        writer.submit_once(record_spooled)


@dataclass
class Round:
    files: int = 0
    calls: int = 0
    batches: int = 0


def record_spool(on_batch=None, stop=None) -> Round:
    """Record every ready file of the spool (this process's open file rotated first), in
    batches of RECORD_BATCH_SIZE; each file deleted once all its calls are recorded, and no
    other file taken once `stop()` is true. Raises DatabaseError when a batch cannot be
    written: its file is back in ready/ by then."""

    spool.writer.rotate()
    done = Round()
    for claim in spool.claims():
        try:
            calls = [as_call(record) for record in claim.records()]
            for start in range(0, len(calls), settings.RECORD_BATCH_SIZE):
                batch = calls[start : start + settings.RECORD_BATCH_SIZE]
                started = time.monotonic()
                record_initiations(batch)
                done.batches += 1
                if on_batch is not None:
                    on_batch(claim.name, len(batch), time.monotonic() - started)
        except BaseException:
            claim.give_back()
            raise
        claim.done()
        done.files, done.calls = done.files + 1, done.calls + len(calls)
        if stop is not None and stop():
            break
    return done


_retry_after = 0.0


def record_spooled() -> None:
    """This process's writer threads' job (submitted once however many calls wait for it)."""
    global _retry_after
    try:
        record_spool()
    except DatabaseError as exc:
        _retry_after = time.monotonic() + settings.RECORD_RETRY_SECONDS
        counters.increment("recording.retry")
        log.warning("recording: %s; the spooled calls are kept for the next try", exc)
    finally:
        close_old_connections()


def _rotated() -> None:
    """The spool's rotator found calls waiting: recorded here unless the record worker does."""
    if not settings.RECORD_WORKER and time.monotonic() >= _retry_after:
        writer.submit_once(record_spooled)


spool.writer.on_rotate = _rotated


def _rotate_at_exit() -> None:
    """The open file handed over at a clean exit (the consumers would take it anyway once this
    process is gone; this spares them the wait)."""
    try:
        spool.writer.rotate()
    except OSError as exc:
        log.warning("spool: could not rotate at exit (%s)", exc)


atexit.register(_rotate_at_exit)
