"""Writes taken off a response path: the caller gets its answer, one worker thread per process
does the writing. A failed write is retried, then logged with everything needed to redo it
(and the post-call report re-creates a call whose opening row was lost)."""

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable

from django.db import DatabaseError, close_old_connections

from monitoring import counters

log = logging.getLogger(__name__)
RETRY_DELAYS = (0.05, 0.2, 1.0)


class DeferredWriter:
    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[..., object], *args) -> None:
        self._ensure_worker()
        self._jobs.put((job, args))

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted job has run (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._jobs.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def pending(self) -> int:
        return self._jobs.unfinished_tasks

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._run, name="opsdash-deferred", daemon=True
                )
                self._worker.start()

    def _run(self) -> None:
        while True:
            job, args = self._jobs.get()
            try:
                self._run_with_retries(job, args)
            finally:
                close_old_connections()
                self._jobs.task_done()

    def _run_with_retries(self, job, args) -> None:
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            time.sleep(delay)
            try:
                job(*args)
                return
            except DatabaseError:
                log.warning("deferred %s failed (attempt %s), retrying", job.__name__, attempt + 1)
                close_old_connections()
            except Exception:  # a bug in a job must not kill the worker; logged with its input
                log.exception("deferred %s raised", job.__name__)
                break
        counters.increment("deferred.lost")
        log.error("deferred %s gave up; its input: %r", job.__name__, args)


def _drain_at_exit() -> None:
    if not writer.drain(5.0):
        counters.increment("deferred.lost", writer.pending())
        log.error("deferred: %s writes still queued at exit are lost", writer.pending())


writer = DeferredWriter()
atexit.register(_drain_at_exit)
