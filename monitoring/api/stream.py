"""Server-sent events (`curl -N /api/monitoring/stream`): a snapshot every few seconds, plus the
dashboard group's events (alert transitions, switch and breaker changes) as they happen. An
async view: a waiting client holds no thread."""

import asyncio
import json
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, StreamingHttpResponse

from monitoring.alerts.evaluator import snapshot
from monitoring.api.access import monitoring_access
from monitoring.events import DASHBOARD_GROUP
from monitoring.metrics.aggregate import aggregate

log = logging.getLogger(__name__)
SNAPSHOT_SECONDS = 5.0


def snapshot_now() -> dict:
    return snapshot(aggregate(60))


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def _subscribe():
    layer = get_channel_layer()
    try:
        channel = await layer.new_channel()
        await layer.group_add(DASHBOARD_GROUP, channel)
    except Exception as exc:  # no live events without a layer; snapshots still flow
        log.warning("stream: channel layer unavailable (%s); snapshots only", exc)
        return None, None
    return layer, channel


async def _next_event(layer, channel, timeout: float):
    if layer is None:
        await asyncio.sleep(timeout)
        return None
    try:
        return await asyncio.wait_for(layer.receive(channel), timeout)
    except TimeoutError:
        return None


async def event_stream(snapshot_seconds: float = SNAPSHOT_SECONDS, limit: int | None = None):
    layer, channel = await _subscribe()
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        yield ": opsdash monitoring stream\n\n"
        next_snapshot = loop.time()
        while limit is None or sent < limit:
            wait = next_snapshot - loop.time()
            if wait <= 0:
                yield sse("snapshot", await sync_to_async(snapshot_now)())
                next_snapshot = loop.time() + snapshot_seconds
                sent += 1
                continue
            message = await _next_event(layer, channel, wait)
            if message is not None:
                yield sse(message.get("event", "message"), message.get("payload", {}))
                sent += 1
    finally:
        if layer is not None:
            await layer.group_discard(DASHBOARD_GROUP, channel)


@monitoring_access
async def stream(request: HttpRequest) -> StreamingHttpResponse:
    response = StreamingHttpResponse(event_stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell a proxy not to hold the events back
    return response
