"""The webhooks' own ASGI handler (opsdash.intake_handler): a warm initiation answered with no
thread hop at all, the security headers and metrics kept, a sync webhook's database connection
released in its own thread, bad input still answered 4xx, and only async-native middleware."""

import json
import threading

import pytest
from asgiref.sync import SyncToAsync, async_to_sync
from channels.testing import HttpCommunicator
from django.core.signals import request_finished
from django.test import override_settings

from leads.models import WebhookEvent
from leads.webhooks.deferred import writer
from monitoring.cache import gate
from monitoring.metrics.recorder import recorder
from opsdash.intake_handler import IntakeHandler, by_path
from tests.conftest import turn_caching, using_redis
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)

INITIATION = "/webhooks/elevenlabs/conversation-initiation"
POST_CALL = "/webhooks/elevenlabs/post-call"
SECRET = "intake-test-secret"


@pytest.fixture(autouse=True)
def configured(shared_redis):
    with override_settings(
        ELEVENLABS_INITIATION_SECRET=SECRET,
        ELEVENLABS_INITIATION_HEADER="X-Webhook-Secret",
        ELEVENLABS_WEBHOOK_SECRET="",
        WEBHOOK_VERIFY=False,
        INITIATION_TIME_BUDGET=5.0,
        # The switch copy is not re-read during a test (a served app's refresher does that).
        SWITCH_REFRESH_SECONDS=3600,
    ):
        turn_caching(True)
        yield
    writer.drain()


def post(path: str, payload: dict, headers: dict | None = None) -> dict:
    body = json.dumps(payload).encode()
    sent = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    sent += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    communicator = HttpCommunicator(IntakeHandler(), "POST", path, body=body, headers=sent)

    async def answer_then_release() -> dict:
        response = await communicator.get_response(timeout=10)
        # The handler releases the request after the answer is sent; the server lets it finish.
        await communicator.wait(timeout=10)
        return response

    return async_to_sync(answer_then_release)()


def initiation_call() -> dict:
    payload = {"caller_id": CALLER, "called_number": ORG_NUMBER, "call_sid": "CA" + "1" * 32}
    return post(INITIATION, payload, {"X-Webhook-Secret": SECRET})


@pytest.fixture
def thread_hops(monkeypatch):
    """Every sync_to_async call made while the fixture is active, by function name."""
    hops: list[str] = []
    original = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        hops.append(getattr(self.func, "__name__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    return hops


def test_it_answers_a_warm_initiation_without_a_thread_hop(thread_hops):
    org = make_org()
    assert initiation_call()["status"] == 200  # cold: loaded in a worker thread, stored
    writer.drain()
    cold_hops = list(thread_hops)
    thread_hops.clear()
    warm = initiation_call()
    assert warm["status"] == 200
    assert json.loads(warm["body"])["dynamic_variables"]["organization_name"] == org.name
    assert thread_hops == []
    assert cold_hops == ["run"]  # the cold context, loaded and stored in one worker call


def test_it_answers_warm_over_a_unix_socket_too(thread_hops, tmp_path):
    """The one-machine default reaches its embedded Redis over a unix socket."""
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(args=("--unixsocket", str(socket_path), "--unixsocketperm", "700"))
    server.start()
    try:
        with using_redis(f"unix://{socket_path}?db=0"):
            turn_caching(True)
            org = make_org()
            assert initiation_call()["status"] == 200
            writer.drain()
            thread_hops.clear()
            warm = initiation_call()
            assert thread_hops == []
            assert json.loads(warm["body"])["dynamic_variables"]["organization_name"] == org.name
            assert gate.stats.snapshot()["ctx"]["hits"] == 1
    finally:
        server.stop()


def test_it_keeps_the_security_headers_and_the_metrics():
    make_org()
    recorder.take()
    answer = initiation_call()
    headers = {k.decode().lower(): v.decode() for k, v in answer["headers"]}
    assert answer["status"] == 200
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"
    assert "set-cookie" not in headers
    _, _, groups = recorder.take()
    assert groups["webhook_initiation"]["count"] == 1
    assert groups["webhook_initiation"]["status"] == {"2xx": 1}


def test_it_declares_the_length_of_every_answer():
    """As CommonMiddleware does on the other paths: keep-alive clients read by it."""
    make_org()
    for answer in (initiation_call(), post(INITIATION, {"caller_id": CALLER})):
        headers = {k.decode().lower(): v.decode() for k, v in answer["headers"]}
        assert headers["content-length"] == str(len(answer["body"]))


def test_it_releases_a_sync_webhooks_connection_in_its_own_thread(monkeypatch):
    from leads.webhooks import elevenlabs

    view_threads, finished_threads = [], []
    real = elevenlabs.deliveries.record

    def record(*args, **kwargs):
        view_threads.append(threading.get_ident())
        return real(*args, **kwargs)

    def finished(**kwargs):
        finished_threads.append(threading.get_ident())

    monkeypatch.setattr(elevenlabs.deliveries, "record", record)
    request_finished.connect(finished, dispatch_uid="intake-test")
    try:
        for n in range(3):
            envelope = {"type": "post_call_transcription", "data": {"conversation_id": f"c-{n}"}}
            assert post(POST_CALL, envelope)["status"] == 200
    finally:
        request_finished.disconnect(dispatch_uid="intake-test")
    assert WebhookEvent.objects.filter(event_type="post_call_transcription").count() == 3
    assert len(view_threads) == 3
    assert finished_threads == view_threads
    assert threading.get_ident() not in view_threads


def test_it_still_answers_bad_input_with_its_4xx():
    assert post(INITIATION, {"caller_id": CALLER})["status"] == 401
    missing = post(INITIATION, {"caller_id": CALLER}, {"X-Webhook-Secret": SECRET})
    assert missing["status"] == 400
    assert json.loads(missing["body"]) == {"error": "missing required field: called_number"}
    with override_settings(WEBHOOK_MAX_BODY_BYTES=100):
        big = post(POST_CALL, {"type": "x", "data": {"conversation_id": "c", "pad": "x" * 200}})
    assert big["status"] == 413


def test_it_refuses_a_middleware_that_would_hop_threads():
    stock = "django.contrib.sessions.middleware.SessionMiddleware"
    with override_settings(INTAKE_MIDDLEWARE=[stock]):
        IntakeHandler()  # stock middleware is async-capable through its adapter: accepted
    with override_settings(INTAKE_MIDDLEWARE=["tests.opsdash.test_intake_handler.SyncOnly"]):
        with pytest.raises(TypeError, match="is not async-capable"):
            IntakeHandler()


class SyncOnly:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response


def test_it_routes_only_the_webhooks_to_the_intake_handler():
    seen = []

    def app(name):
        async def answer(scope, receive, send):
            seen.append((name, scope["path"]))

        return answer

    router = by_path(intake=app("intake"), pages=app("pages"))
    for path in ("/webhooks/twilio/sms", "/dashboard/", "/webhooksx", "/api/monitoring/health"):
        async_to_sync(router)({"type": "http", "path": path}, None, None)
    assert seen == [
        ("intake", "/webhooks/twilio/sms"),
        ("pages", "/dashboard/"),
        ("pages", "/webhooksx"),
        ("pages", "/api/monitoring/health"),
    ]
