"""What runs beside the requests: the switch refresher, the metrics flusher and, where
monitoring runs, the alert evaluator (active only while it holds the lease) and the
notification worker. An app process starts them once (opsdash.asgi, `start`); `manage.py
monitor` starts the same set without the app (`start_monitor`), so its Redis samples reach the
charts and it sees every flip of the switch."""

import atexit
import logging
import threading

from django.conf import settings
from django.db import DatabaseError

from monitoring.alerts.delivery import DeliveryWorker
from monitoring.alerts.evaluator import Evaluator
from monitoring.cache import switch
from monitoring.identity import PROCESS_ID
from monitoring.metrics.flusher import Flusher
from monitoring.metrics.store import flush
from monitoring.models import ProcessEvent
from monitoring.redaction import masked_url

log = logging.getLogger(__name__)
_started = threading.Lock()
# The background threads of this process, in the order they started.
_running: list = []


def start() -> None:
    """An app process: monitoring too unless MONITORING_IN_APP=false gives it to `monitor`."""
    if not _started.acquire(blocking=False):
        return
    state = _start_background(monitoring=settings.MONITORING_IN_APP, role="app")
    log.warning("opsdash started: %s", describe_setup(state))


def start_monitor() -> None:
    """`manage.py monitor`: the same background, with monitoring whatever MONITORING_IN_APP."""
    if not _started.acquire(blocking=False):
        return
    _start_background(monitoring=True, role="monitor")


def _start_background(monitoring: bool, role: str) -> switch.SwitchState | None:
    try:
        state = switch.view.refresh()
    except DatabaseError:
        log.error("start-up: database unreachable; the switch will be read once it answers")
        state = None
    workers = [switch.SwitchRefresher(switch.view), Flusher()]
    if monitoring and settings.REDIS_MONITORING_ENABLED:
        workers += [Evaluator(), DeliveryWorker()]
    for worker in workers:
        worker.start()
    _running[:] = workers
    _note_process(ProcessEvent.Kind.START, role)
    atexit.register(stop, role)
    return state


def _note_process(kind: str, role: str) -> None:
    """A start or an exit, for the timelines and charts (a deploy shows as exits and starts)."""
    try:
        ProcessEvent.objects.create(process=PROCESS_ID, kind=kind, role=role)
    except DatabaseError:
        log.warning("database unreachable: process %s not recorded", kind)


def stop(role: str = "app") -> None:
    """Stop the background, write the last window, and hand the evaluator lease over at once
    (not after it lapses)."""
    workers, _running[:] = list(_running), []
    if not workers:
        return
    for worker in workers:
        worker.stop()
    _note_process(ProcessEvent.Kind.EXIT, role)
    try:
        flush()
    except DatabaseError:
        log.warning("exit: database unreachable; last metrics window lost")


def describe_setup(state: switch.SwitchState | None) -> str:
    database = "PostgreSQL (psycopg pool)" if settings.DATABASE_IS_POSTGRES else "SQLite"
    layer = "Redis (channels_redis)" if settings.CHANNEL_REDIS_URL else "in-memory (one process)"
    return (
        f"database: {database}; channel layer: {layer}; cache: {describe_cache(state)}; "
        f"monitoring: {describe_monitoring()}"
    )


def describe_monitoring() -> str:
    if not settings.REDIS_MONITORING_ENABLED:
        return "off (REDIS_MONITORING_ENABLED=false)"
    if not settings.MONITORING_IN_APP:
        return "in `manage.py monitor` (MONITORING_IN_APP=false)"
    return "in the app (evaluator on a lease, notification worker)"


def describe_cache(state: switch.SwitchState | None) -> str:
    if not settings.REDIS_URL:
        return "no Redis configured, caching off"
    where = "embedded redis-server" if settings.REDIS_EMBEDDED else masked_url(settings.REDIS_URL)
    if state is None:
        return f"Redis at {where}, switch state unknown"
    if state.source == switch.ENVIRONMENT:
        return f"Redis at {where}, caching pinned off by REDIS_ENABLED=false"
    caching = "on" if state.enabled else "off"
    return f"Redis at {where}, caching {caching} (generation {state.generation})"
