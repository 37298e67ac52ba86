"""Processes that owe invalidations: a process commits a write, then sends its invalidation; if
it dies in between (SIGKILL, OOM, a crash), nobody else knows the invalidation is owed. So a
process enlists before its first write commits and keeps a row alive (a beat every
WRITER_BEAT_SECONDS, from a thread of its own); a clean exit removes the row. The evaluator's
rounds (one per deployment) find rows that stopped beating and start a new generation for them,
audited: an unclean death may cost the cache, never its truth."""

import atexit
import logging
import os
import socket
import threading
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from monitoring.cache import switch
from monitoring.models import SwitchAudit, Writer

log = logging.getLogger(__name__)


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Enlistment:
    """This process's row: beaten by a daemon thread, removed at a clean exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._first_beat = threading.Event()
        self._stopping = threading.Event()

    def enlist(self, wait: float = 1.0) -> None:
        """Start beating (once per process; a forked child enlists itself), and wait for the
        first beat so that a write committed after this returns is covered."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._first_beat, self._stopping = threading.Event(), threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="opsdash-writer-beat", daemon=True
            )
            self._thread.start()
            atexit.register(self._clean_exit)
        if not self._first_beat.wait(wait):
            log.warning("cache: could not enlist this process as a writer yet; retrying")

    def _run(self) -> None:
        while True:
            try:
                beat()
                self._first_beat.set()
            except Exception as exc:  # noqa: BLE001 - the beat must outlive any one failure
                log.warning("cache: writer beat failed (%s: %s)", type(exc).__name__, exc)
            finally:
                # Not kept between beats: a connection held by a thread that sleeps 5 s
                # would count against the pool (and keep a test database open).
                connections["default"].close()
            if self._stopping.wait(settings.WRITER_BEAT_SECONDS):
                return

    def abandon(self) -> None:
        """Stop beating and leave the row (a test run whose database is going away); waits
        for a beat under way."""
        self._stopping.set()
        self._abandoned = True
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout=5)

    def _clean_exit(self) -> None:
        self._stopping.set()
        if getattr(self, "_abandoned", False):
            return
        try:
            Writer.objects.filter(process=process_id()).delete()
        except DatabaseError:
            log.warning("cache: exit not recorded (database unreachable): a new generation follows")


def beat() -> None:
    """This process is alive (its own connection: never inside a caller's transaction)."""
    if connections["default"].in_atomic_block:  # a thread's own connection never is
        raise DatabaseError("writer beat inside a transaction")
    Writer.objects.update_or_create(process=process_id(), defaults={"beat_at": timezone.now()})


enlistment = Enlistment()


def silent_for() -> timedelta:
    return timedelta(seconds=4 * settings.WRITER_BEAT_SECONDS)


def sweep() -> list[str]:
    """Processes that stopped beating without a clean exit: one new generation for all of
    them, audited, and their rows removed. Returns their ids. (A process is never dead to
    itself: its own row is left to its beat.)"""
    dead = list(
        Writer.objects.filter(beat_at__lt=timezone.now() - silent_for())
        .exclude(process=process_id())
        .values_list("process", "beat_at")
    )
    if not dead:
        return []
    names = ", ".join(f"{p} (last seen {at:%H:%M:%S})" for p, at in dead[:5])
    more = f" and {len(dead) - 5} more" if len(dead) > 5 else ""
    switch.bump_generation(
        actor="system",
        reason=(
            f"process {names}{more} stopped without a clean exit: an invalidation it owed "
            "after a commit may have been lost"
        )[:500],
        source="system",
        action=SwitchAudit.Action.LOST,
    )
    Writer.objects.filter(process__in=[p for p, _ in dead]).delete()
    log.warning("cache: writers gone without a clean exit: %s%s; new generation", names, more)
    return [p for p, _ in dead]
