"""The thread beside every process's requests that writes its metric window every
METRICS_FLUSH_SECONDS, rolls the history up about twice a minute (any process may: the rollups
take turns on a lock) and prunes now and then."""

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from monitoring.metrics import rollups, store

log = logging.getLogger(__name__)
ROLLUP_SECONDS = 30


def roll_up() -> None:
    try:
        rollups.roll_up()
    except DatabaseError:
        raise
    except Exception:  # a bug in the history must not stop this process's windows
        log.exception("metrics: rollup failed")


def _rounds_per(seconds: float) -> int:
    return max(1, int(seconds // settings.METRICS_FLUSH_SECONDS))


class Flusher(threading.Thread):
    """Writes this process's window every METRICS_FLUSH_SECONDS; rolls the history up about
    twice a minute (any process may: the rollups take turns on a lock); prunes now and then."""

    def __init__(self) -> None:
        super().__init__(name="opsdash-metrics-flusher", daemon=True)
        self._stopping = threading.Event()

    def run(self) -> None:
        rounds = 0
        while not self._stopping.wait(settings.METRICS_FLUSH_SECONDS):
            rounds += 1
            try:
                store.flush()
                if rounds % _rounds_per(ROLLUP_SECONDS) == 0:
                    roll_up()
                if rounds % 60 == 0:
                    store.prune()
                    rollups.prune_rollups()
            except DatabaseError:
                log.warning("metrics: database unreachable, window dropped")
            finally:
                close_old_connections()

    def stop(self) -> None:
        self._stopping.set()
