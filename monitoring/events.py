"""Live-update events for the dashboard, sent to one channel-layer group."""

import asyncio
import logging
import os
import queue
import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger(__name__)

DASHBOARD_GROUP = "monitoring.dashboard"
# A hung channel-layer Redis must not hold a health check (or the page that shows it).
HEALTH_TIMEOUT = 0.5


def publish(event_type: str, payload: dict) -> bool:
    """Send an event to every open dashboard, without waiting on the channel layer: a live
    update is a convenience, and the write that triggered it has already committed, so neither
    a failure nor a hung layer may reach its caller. Returns False when the event cannot even
    be handed over (no layer, or the hand-over queue full: counted as dropped)."""
    layer = get_channel_layer()
    if layer is None:
        return False
    # One message type for every event: the consumer forwards them all, knowing none by name.
    message = {"type": "dashboard.event", "event": event_type, "payload": payload}
    if isinstance(layer, InMemoryChannelLayer):
        # In the process itself: it cannot hang, and its queues belong to the serving loop.
        return _send_now(layer, event_type, message)
    return publisher.submit(layer, event_type, message)


def _send_now(layer, event_type: str, message: dict) -> bool:
    try:
        async_to_sync(layer.group_send)(DASHBOARD_GROUP, message)
    except Exception:  # any layer backend, any fault: documented fail-open point
        log.warning("live update %s not delivered", event_type, exc_info=True)
        return False
    return True


class Publisher:
    """Hands events to a thread of its own that sends them to the channel layer, each send
    bounded by SEND_TIMEOUT; a full queue drops the newest event rather than wait."""

    SEND_TIMEOUT = 0.5
    QUEUE_SIZE = 1000

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(self.QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self.dropped = 0
        self.failed = 0

    def submit(self, layer, event_type: str, message: dict) -> bool:
        self._ensure_thread()
        try:
            self._queue.put_nowait((layer, event_type, message))
        except queue.Full:
            self.dropped += 1
            log.warning("live update %s dropped: the channel layer is not keeping up", event_type)
            return False
        return True

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every event handed over so far was sent or given up (tests, exit)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                if self._pid != os.getpid():
                    self._queue = queue.Queue(self.QUEUE_SIZE)  # a forked child's own
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="opsdash-events", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        while True:
            layer, event_type, message = self._queue.get()
            try:
                send = layer.group_send(DASHBOARD_GROUP, message)
                loop.run_until_complete(asyncio.wait_for(send, self.SEND_TIMEOUT))
            except Exception as exc:  # any backend's fault: the event is lost, never raised
                self.failed += 1
                log.warning("live update %s not delivered: %s", event_type, exc or type(exc))
            finally:
                self._queue.task_done()


publisher = Publisher()


def layer_health() -> dict:
    """Whether the channel layer accepts a message now (a group send to a group nobody is in)."""
    layer = get_channel_layer()
    if layer is None:
        return {"status": "fail", "backend": None, "error": "no channel layer configured"}
    backend = type(layer).__name__

    async def probe() -> None:
        message = {"type": "health.check"}
        await asyncio.wait_for(layer.group_send("opsdash.health", message), HEALTH_TIMEOUT)

    try:
        async_to_sync(probe)()
    except Exception as exc:  # any backend's fault is a failed check, reported, not raised
        detail = str(exc) or f"no answer within {HEALTH_TIMEOUT} s"
        return {"status": "warn", "backend": backend, "error": f"{type(exc).__name__}: {detail}"}
    return {"status": "pass", "backend": backend}
