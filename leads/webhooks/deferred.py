"""Writes taken off a response path: the caller gets its answer, a few worker threads per
process do the writing. A failed write is retried, then logged with everything needed to redo
it (and the post-call report re-creates a call whose opening row was lost). When the workers
fall behind by DEFERRED_MAX_QUEUE writes, a write runs at once in the caller's thread instead:
under overload an answer may slow down, but no write is left to be lost."""

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from monitoring import counters

log = logging.getLogger(__name__)
RETRY_DELAYS = (0.05, 0.2, 1.0)


BATCH_SIZE = 100


class _Batched:
    __slots__ = ("item",)

    def __init__(self, item) -> None:
        self.item = item


class DeferredWriter:
    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._waiting: set = set()

    def submit_once(self, job: Callable[[], object]) -> None:
        """Queue `job` unless it is queued already and has not started: however many times it
        is submitted meanwhile, it runs once, after all of them. Never run in the caller's
        thread, however far behind the workers are: what it does is not lost by waiting."""
        with self._lock:
            if job in self._waiting:
                return
            self._waiting.add(job)
        self._queue(self._started_once, (job,))

    def _started_once(self, job: Callable[[], object]) -> None:
        with self._lock:
            self._waiting.discard(job)
        job()

    def submit_batched(self, job: Callable[[list], object], item) -> None:
        """Queue `item` for `job`, which a worker calls with every such item queued at that
        moment (up to BATCH_SIZE): many small writes become one transaction."""
        self.submit(job, _Batched(item))

    async def asubmit_batched(self, job: Callable[[list], object], item) -> None:
        """`submit_batched` for a caller on the event loop: when the workers are behind, the
        write runs in a worker thread (never on the loop), and the caller waits for it."""
        if self._behind():
            await sync_to_async(self._run_inline, thread_sensitive=False)(job, ([item],))
            return
        self._queue(job, (_Batched(item),))

    def submit(self, job: Callable[..., object], *args) -> None:
        if self._behind():
            if args and isinstance(args[0], _Batched):
                args = ([args[0].item],)
            self._run_inline(job, args)
            return
        self._queue(job, args)

    def _behind(self) -> bool:
        return self._jobs.unfinished_tasks >= settings.DEFERRED_MAX_QUEUE

    def _run_inline(self, job, args) -> None:
        counters.increment("deferred.inline")
        try:
            self._run_with_retries(job, args)
        finally:
            close_old_connections()

    def _queue(self, job, args) -> None:
        self._ensure_workers()
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

    def _ensure_workers(self) -> None:
        if len(self._workers) == settings.DEFERRED_WORKERS and all(
            w.is_alive() for w in self._workers
        ):
            return
        with self._lock:
            self._workers = [w for w in self._workers if w.is_alive()]
            while len(self._workers) < settings.DEFERRED_WORKERS:
                worker = threading.Thread(target=self._run, name="opsdash-deferred", daemon=True)
                worker.start()
                self._workers.append(worker)

    def _run(self) -> None:
        while True:
            job, args = self._jobs.get()
            taken = 1
            try:
                if args and isinstance(args[0], _Batched):
                    items, others = self._gather(job, args[0])
                    taken += len(items) - 1 + len(others)
                    self._run_with_retries(job, (items,))
                    for other_job, other_args in others:
                        self._run_with_retries(other_job, other_args)
                else:
                    self._run_with_retries(job, args)
            finally:
                close_old_connections()
                for _ in range(taken):
                    self._jobs.task_done()

    def _gather(self, job, first: "_Batched") -> tuple[list, list]:
        """The items queued for the same batched job (the others met on the way, kept)."""
        items, others = [first.item], []
        while len(items) < BATCH_SIZE:
            try:
                other_job, other_args = self._jobs.get_nowait()
            except queue.Empty:
                break
            batched = bool(other_args) and isinstance(other_args[0], _Batched)
            if batched and other_job == job:
                items.append(other_args[0].item)
            else:
                others.append((other_job, ([other_args[0].item],) if batched else other_args))
        return items, others

    def _run_with_retries(self, job, args) -> None:
        name = args[0].__name__ if job == self._started_once else job.__name__
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            time.sleep(delay)
            try:
                job(*args)
                return
            except DatabaseError:
                log.warning("deferred %s failed (attempt %s), retrying", name, attempt + 1)
                close_old_connections()
            except Exception:  # a bug in a job must not kill the worker; logged with its input
                log.exception("deferred %s raised", name)
                break
        counters.increment("deferred.lost")
        # Its input is not logged: payloads carry names, numbers and what callers said.
        log.error("deferred %s gave up (%s)", name, _identify(args))


def _identify(args) -> str:
    """The call SIDs in a job's input, to find its rows; nothing personal."""
    found: list[str] = []
    stack = list(args)
    while stack and len(found) < 20:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("call_sid"), str):
                found.append(item["call_sid"][:64])
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return f"call SIDs: {', '.join(sorted(found))}" if found else "no call SID in its input"


def _drain_at_exit() -> None:
    """Every write queued runs before the process exits (a call spooled but not recorded yet
    stays in its file for the next consumer in any case)."""
    if not writer.drain(settings.DEFERRED_DRAIN_SECONDS):
        counters.increment("deferred.lost", writer.pending())
        log.error("deferred: %s writes still queued at exit are lost", writer.pending())


writer = DeferredWriter()
atexit.register(_drain_at_exit)
