"""The server-sent event stream: a snapshot first, then the dashboard group's events as they are
published, consumed straight from `event_stream` on an asyncio loop; and the HTTP view behind a
Bearer token answering text/event-stream."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient, override_settings

from monitoring import events
from monitoring.api.stream import event_stream
from monitoring.identity import PROCESS_ID
from monitoring.metrics import store
from monitoring.metrics.recorder import recorder
from tests.monitoring.metrics_support import TOKEN, bearer, parse_sse, reset_metrics

# The stream reads the database from asgiref's executor thread, outside the test's transaction.
pytestmark = pytest.mark.django_db(transaction=True)

COMMENT = ": opsdash monitoring stream\n\n"
TRANSITION = {
    "id": 7,
    "rule": "redis_down",
    "severity": "critical",
    "summary": "Redis connection lost",
    "from": "pending",
    "to": "firing",
    "value": 1.0,
}


@pytest.fixture(autouse=True)
def fresh_window():
    reset_metrics()
    yield
    reset_metrics()


async def release_connections() -> None:
    """Close the connection the stream's snapshots opened on asgiref's executor thread."""
    await sync_to_async(connections.close_all)()


def test_it_starts_with_a_snapshot_of_the_last_minute():
    recorder.record("webhook_sms", 200, 0.004, 1)
    recorder.record("webhook_sms", 404, 0.004, 0)
    store.flush()

    async def scenario() -> list[str]:
        try:
            return [chunk async for chunk in event_stream(snapshot_seconds=3600, limit=1)]
        finally:
            await release_connections()

    chunks = asyncio.run(scenario())

    assert chunks[0] == COMMENT
    assert len(chunks) == 2
    event, data = parse_sse(chunks[1])
    assert event == "snapshot"
    assert set(data) == {"at", "switch", "breaker", "minute"}
    assert set(data["minute"]) == {"overall", "cache", "route_groups", "processes"}
    assert data["breaker"] == "closed"
    assert set(data["switch"]) >= {"enabled", "source", "generation"}
    assert data["minute"]["processes"] == [PROCESS_ID]
    assert data["minute"]["overall"]["requests"] == 2
    assert data["minute"]["route_groups"]["webhook_sms"]["status"] == {"2xx": 1, "4xx": 1}


def test_it_delivers_a_published_event_while_it_waits():
    async def scenario() -> tuple[list[str], bool]:
        stream = event_stream(snapshot_seconds=3600)
        try:
            chunks = [await anext(stream), await anext(stream)]  # the comment, the snapshot
            # The stream now waits (up to an hour) for the next event or snapshot.
            waiting = asyncio.ensure_future(anext(stream))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not waiting.done()
            # Published from sync code on another thread, as the evaluator does; publish's
            # async_to_sync sends on this loop, where the stream's layer lives.
            delivered = await sync_to_async(events.publish)("alert.transition", TRANSITION)
            chunks.append(await asyncio.wait_for(waiting, timeout=30))
            # (Another test's late breaker.changed broadcast could come first: read on.)
            while not chunks[-1].startswith("event: alert.transition\n"):
                chunks.append(await asyncio.wait_for(anext(stream), timeout=30))
            return chunks, delivered
        finally:
            await stream.aclose()
            await release_connections()

    chunks, delivered = asyncio.run(scenario())

    assert delivered is True
    assert chunks[0] == COMMENT
    assert parse_sse(chunks[1])[0] == "snapshot"
    assert parse_sse(chunks[-1]) == ("alert.transition", TRANSITION)


def test_it_sends_the_next_snapshot_when_one_is_due():
    async def scenario() -> list[str]:
        try:
            return [chunk async for chunk in event_stream(snapshot_seconds=0.01, limit=2)]
        finally:
            await release_connections()

    chunks = asyncio.run(scenario())

    assert [parse_sse(chunk)[0] for chunk in chunks[1:]] == ["snapshot", "snapshot"]


@override_settings(MONITORING_TOKEN=TOKEN)
def test_it_serves_the_stream_over_http_with_a_token():
    async def first_chunk():
        response = await AsyncClient().get("/api/monitoring/stream", headers=bearer())
        content = response.streaming_content
        try:
            return response, await anext(content)
        finally:
            await content.aclose()
            await release_connections()

    response, chunk = asyncio.run(first_chunk())

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert chunk == COMMENT.encode()


@override_settings(MONITORING_TOKEN=TOKEN)
def test_it_refuses_the_stream_without_a_token():
    async def get():
        return await AsyncClient().get("/api/monitoring/stream", headers=bearer("wrong"))

    response = asyncio.run(get())

    assert (response.status_code, response["Content-Type"]) == (401, "application/json")
    assert not response.streaming
