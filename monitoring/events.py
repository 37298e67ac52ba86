"""Live-update events for the dashboard, sent to one channel-layer group."""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

DASHBOARD_GROUP = "monitoring.dashboard"
# A hung channel-layer Redis must not hold a health check (or the page that shows it).
HEALTH_TIMEOUT = 0.5


def publish(event_type: str, payload: dict) -> bool:
    """Send an event to every open dashboard. Returns False instead of raising when the channel
    layer is unavailable: a live update is a convenience, and the write that triggered it has
    already committed, so no failure here may reach its caller."""
    layer = get_channel_layer()
    if layer is None:
        return False
    message = {"type": event_type.replace(".", "_"), "event": event_type, "payload": payload}
    try:
        async_to_sync(layer.group_send)(DASHBOARD_GROUP, message)
    except Exception:  # any layer backend, any fault: documented fail-open point
        log.warning(
            "live update %s not delivered: channel layer unavailable", event_type, exc_info=True
        )
        return False
    return True


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
