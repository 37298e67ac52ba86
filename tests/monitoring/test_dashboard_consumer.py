"""The dashboard's websocket, through the same stack opsdash.asgi serves it with
(SameOriginValidator(AuthMiddlewareStack(URLRouter(...)))) and a real session cookie:
staff get every dashboard event; anonymous users, users who are not staff and other origins are
refused; a ping is answered through the channel layer."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import override_settings
from django.urls import path

from monitoring import events
from monitoring.cache import switch
from monitoring.dashboard.consumers import (
    CLOSE_FORBIDDEN,
    CLOSE_LAYER_UNAVAILABLE,
    DashboardConsumer,
)
from monitoring.dashboard.origins import SameOriginValidator
from monitoring.events import DASHBOARD_GROUP
from tests.personas import plain_user, session_id, viewer

# The session and user are read on a worker thread, outside a test transaction.
pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = b"http://localhost:8000"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
TIMEOUT = 3


def application():
    """As opsdash.asgi builds it (importing that module would start the background threads)."""
    return SameOriginValidator(
        AuthMiddlewareStack(URLRouter([path("ws/monitoring/", DashboardConsumer.as_asgi())]))
    )


@pytest.fixture(autouse=True)
def fresh_layer():
    """A channel layer of this test's own (each test runs its own event loop), and a runtime
    switch (REDIS_URL set; no test here needs Redis itself)."""
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=layers, REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None):
        yield


def session_cookie(user) -> bytes:
    return f"sessionid={session_id(user)}".encode()


def communicator(cookie: bytes | None = None, origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"localhost:8000")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application(), "/ws/monitoring/", headers=headers)


async def release_connections() -> None:
    """Close the connections the session lookups opened on asgiref's worker thread."""
    await sync_to_async(connections.close_all)()


def run(scenario):
    async def wrapped():
        try:
            return await scenario()
        finally:
            await release_connections()

    return asyncio.run(wrapped())


def test_it_lets_staff_in_and_pushes_a_switch_change():
    cookie = session_cookie(viewer("olivia"))

    async def scenario():
        socket = communicator(cookie)
        connected, _ = await socket.connect()
        assert connected
        await database_sync_to_async(switch.set_caching)(
            False, actor="olivia", reason="incident 12", source="dashboard"
        )
        message = await socket.receive_json_from(timeout=TIMEOUT)
        await socket.disconnect()
        return message

    message = run(scenario)

    assert message["event"] == "switch.changed"
    payload = message["payload"]
    assert (payload["action"], payload["enabled"], payload["source"]) == (
        "disable",
        False,
        "runtime",
    )
    assert (payload["changed_by"], payload["reason"], payload["generation"]) == (
        "olivia",
        "incident 12",
        1,
    )


def test_it_forwards_every_dashboard_event_as_event_and_payload():
    cookie = session_cookie(viewer("olivia"))
    published = [
        ("monitoring.snapshot", {"at": "2026-03-02T15:00:00+00:00", "minute": {}}),
        ("alert.transition", {"id": 7, "rule": "redis_connection_lost", "to": "firing"}),
        ("breaker.changed", {"from": "closed", "to": "open", "process": "web-1:42"}),
        ("lead.message", {"lead_id": 3, "id": 9, "body": "Is the cargo bike in stock?"}),
        ("call.updated", {"conversation_id": "conv_1", "lead_id": 3}),
    ]

    async def scenario():
        socket = communicator(cookie)
        assert (await socket.connect())[0]
        for event_type, payload in published:
            assert await sync_to_async(events.publish)(event_type, payload)
        received = [await socket.receive_json_from(timeout=TIMEOUT) for _ in published]
        await socket.disconnect()
        return received

    received = run(scenario)

    assert received == [{"event": name, "payload": payload} for name, payload in published]


def test_it_closes_anonymous_connections():
    async def scenario():
        return await communicator().connect()

    assert run(scenario) == (False, CLOSE_FORBIDDEN)


def test_it_closes_connections_of_users_who_are_not_staff():
    cookie = session_cookie(plain_user("mark"))

    async def scenario():
        return await communicator(cookie).connect()

    assert run(scenario) == (False, CLOSE_FORBIDDEN)


@pytest.mark.parametrize(
    "origin",
    [
        b"https://evil.example",
        b"http://localhost:8001",  # another port of the same host: another page, another app
        b"https://localhost:8000",  # another scheme
        b"http://localhost",
        b"null",
        b"",
    ],
)
def test_it_refuses_a_connection_from_another_origin(origin):
    cookie = session_cookie(viewer("olivia"))

    async def scenario():
        connected, _ = await communicator(cookie, origin=origin).connect()
        return connected

    assert run(scenario) is False


def test_it_accepts_an_origin_listed_as_trusted():
    cookie = session_cookie(viewer("olivia"))

    async def scenario():
        socket = communicator(cookie, origin=b"https://ops.example.com")
        connected, _ = await socket.connect()
        await socket.disconnect()
        return connected

    with override_settings(CSRF_TRUSTED_ORIGINS=["https://ops.example.com"]):
        assert run(scenario) is True


def test_it_answers_a_ping_through_the_channel_layer():
    cookie = session_cookie(viewer("olivia"))

    async def scenario():
        socket = communicator(cookie)
        assert (await socket.connect())[0]
        await socket.send_json_to({"type": "ping"})
        answer = await socket.receive_json_from(timeout=TIMEOUT)
        await socket.disconnect()
        return answer

    assert run(scenario) == {"event": "pong", "payload": {}}


def test_it_leaves_the_dashboard_group_when_the_page_closes():
    cookie = session_cookie(viewer("olivia"))

    async def scenario():
        layer = get_channel_layer()
        socket = communicator(cookie)
        assert (await socket.connect())[0]
        members_while_open = len(layer.groups.get(DASHBOARD_GROUP, {}))
        await socket.disconnect()
        return members_while_open, len(layer.groups.get(DASHBOARD_GROUP, {}))

    assert run(scenario) == (1, 0)


def test_it_closes_the_connection_when_the_channel_layer_is_down(monkeypatch):
    cookie = session_cookie(viewer("olivia"))

    async def unavailable(*args, **kwargs):
        raise ConnectionError("channel layer Redis refused the connection")

    monkeypatch.setattr(type(get_channel_layer()), "group_add", unavailable)

    async def scenario():
        return await communicator(cookie).connect()

    assert run(scenario) == (False, CLOSE_LAYER_UNAVAILABLE)
