"""`manage.py demo`: `seed` makes the demo organization and its leads once (a second run changes
nothing); `traffic` sends signed webhooks to a live server, every one answered 2xx and stored;
it stops with the cause when the secrets are missing, the app is unreachable or the app
refuses the signatures."""

import json
import random
import re
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from threading import Thread

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from leads.demo import data, traffic
from leads.models import Conversation, Lead, Message, Organization, PhoneNumber, WebhookEvent
from leads.webhooks.deferred import writer
from tests.factories import make_org
from tests.redis_servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

SECRETS = {
    "ELEVENLABS_INITIATION_SECRET": "test-initiation-secret",
    "ELEVENLABS_WEBHOOK_SECRET": "test-webhook-secret",
    "TWILIO_AUTH_TOKEN": "test-twilio-token",
    "WEBHOOK_VERIFY": True,
}
SENT = re.compile(
    r"sent (?P<n>\d+) deliveries in \d+\.\d s \(\d+\.\d/s\): (?P<counts>.*)",
)


def demo(*args: str) -> list[str]:
    out, err = StringIO(), StringIO()
    call_command("demo", *args, stdout=out, stderr=err)
    return out.getvalue().splitlines()


def demo_error(*args: str) -> str:
    with pytest.raises(CommandError) as excinfo:
        demo(*args)
    return str(excinfo.value)


def row_counts() -> dict[str, int]:
    models = (Organization, PhoneNumber, Lead, Conversation, Message)
    return {model.__name__: model.objects.count() for model in models}


# --- seed ---------------------------------------------------------------------------------


def test_it_seeds_the_demo_organization_with_leads_and_history():
    lines = demo("seed", "--leads", "6")
    org = Organization.objects.get(name="Demo Bikes")
    assert list(org.numbers.values_list("e164", flat=True)) == [data.NUMBER]
    assert (org.timezone, org.business_hours) == (data.TIMEZONE, data.BUSINESS_HOURS)
    counts = row_counts()
    assert lines == [
        f"Demo Bikes ({data.NUMBER}): created",
        f"leads: 6 (6 new), conversations: {counts['Conversation']}, messages: {counts['Message']}",
    ]
    assert sorted(Lead.objects.values_list("phone", flat=True)) == [
        data.lead_phone(n) for n in range(6)
    ]
    assert Lead.objects.filter(name="").count() == 0
    assert Lead.objects.filter(last_contact_at=None).count() == 0
    # Every lead has history: at least one conversation with messages.
    assert Conversation.objects.values("lead").distinct().count() == 6
    assert counts["Message"] >= 2 * counts["Conversation"]


def test_it_seeds_idempotently():
    demo("seed", "--leads", "5")
    first = row_counts()
    lines = demo("seed", "--leads", "5")
    assert row_counts() == first
    assert lines == [
        f"Demo Bikes ({data.NUMBER}): already there",
        f"leads: 5 (0 new), conversations: {first['Conversation']}, messages: {first['Message']}",
    ]


def test_it_adds_only_the_missing_leads_when_asked_for_more():
    demo("seed", "--leads", "3")
    lines = demo("seed", "--leads", "5")
    assert lines[1].startswith("leads: 5 (2 new), ")
    assert Organization.objects.count() == 1


def test_it_refuses_to_seed_onto_a_number_another_organization_has():
    make_org("Someone Else", data.NUMBER)
    assert demo_error("seed", "--leads", "1") == (
        f"cannot seed the demo: {data.NUMBER} already belongs to Someone Else"
    )
    assert Lead.objects.count() == 0


# --- traffic ------------------------------------------------------------------------------


@override_settings(**SECRETS)
def test_it_sends_signed_traffic_that_the_app_answers_and_stores(live_server):
    demo("seed", "--leads", "5")
    lines = demo(
        "traffic", "--url", live_server.url, "--rate", "5", "--duration", "2", "--leads", "5",
        "--seed", "7",
    )  # fmt: skip
    assert writer.drain(10)
    assert lines[0] == (
        f"sending 5 deliveries/s to {live_server.url} for 2 s (calls to {data.NUMBER}: "
        "initiation then post-call; texts: Twilio SMS)"
    )
    sent = SENT.fullmatch(lines[-1])
    assert sent, lines
    # The same seed makes the same deliveries: which endpoints the first n went to is known.
    n = int(sent["n"])
    assert 0 < n <= 10  # 5/s for 2 s, fewer only if the server stalled
    mix = traffic.CallerMix(5, random.Random(7))
    expected = Counter(mix.next_delivery().endpoint for _ in range(n))
    answered_200 = Counter({(endpoint, "200"): count for endpoint, count in expected.items()})
    assert sent["counts"] == traffic.describe(answered_200)
    event_types = {
        traffic.INITIATION: "conversation_initiation",
        traffic.POST_CALL: "post_call_transcription",
        traffic.SMS: "sms",
    }
    stored = Counter(WebhookEvent.objects.values_list("event_type", flat=True))
    assert stored == {event_types[endpoint]: count for endpoint, count in expected.items()}
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}


def test_it_says_which_secrets_are_missing():
    with override_settings(
        ELEVENLABS_INITIATION_SECRET="",
        ELEVENLABS_WEBHOOK_SECRET="set",
        TWILIO_AUTH_TOKEN="",
        WEBHOOK_VERIFY=True,
        PUBLIC_BASE_URL="http://localhost:8000",
    ):
        error = demo_error("traffic", "--url", "http://127.0.0.1:1", "--duration", "1")
    assert error.startswith(
        "the webhook secrets are not configured here: ELEVENLABS_INITIATION_SECRET, "
        "TWILIO_AUTH_TOKEN. Set them to the values the app at http://127.0.0.1:1 runs with "
        "(and PUBLIC_BASE_URL, now http://localhost:8000, "
    )


@override_settings(**SECRETS)
def test_it_says_when_the_app_is_unreachable():
    port = free_port()
    error = demo_error("traffic", "--url", f"http://127.0.0.1:{port}", "--duration", "1")
    assert (
        error
        == f"the app at http://127.0.0.1:{port} is unreachable: [Errno 111] Connection refused"
    )


class Refusing(ThreadingHTTPServer):
    """An app that is up but refuses every webhook's credentials."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer(200, {"status": "pass"})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(401, {"error": "wrong X-Webhook-Secret header"})

        def _answer(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass


@override_settings(**SECRETS)
def test_it_stops_when_the_app_refuses_the_signature():
    server = Refusing()
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        error = demo_error("traffic", "--url", url, "--duration", "5", "--seed", "3")
    finally:
        server.shutdown()
        server.server_close()
    assert re.fullmatch(
        r"the app refused the (initiation|sms) webhook \(HTTP 401: wrong X-Webhook-Secret "
        r"header\); (ELEVENLABS_INITIATION_SECRET|TWILIO_AUTH_TOKEN) .* must match the app's",
        error,
    )


# --- the schedule and the mix, without an app ---------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class AnsweringClient:
    def __init__(self, clock: FakeClock, takes: float = 0.0) -> None:
        self.paths: list[str] = []
        self._clock, self._takes = clock, takes

    def request(self, method, path, body=b"", headers=None):
        self.paths.append(path)
        self._clock.now += self._takes
        return 200, b"{}"


@override_settings(**SECRETS)
def test_it_sends_at_the_rate_for_the_duration_and_reports_each_interval():
    clock = FakeClock()
    client = AnsweringClient(clock)
    tally, reports = traffic.Tally(), []
    mix = traffic.CallerMix(10, random.Random(1))
    seconds = traffic.run(
        client,
        mix,
        traffic.Schedule(rate=5, duration=4, report_every=2),
        tally,
        on_report=lambda elapsed, counts: reports.append((elapsed, sum(counts.values()))),
        clock=clock,
        sleep=clock.sleep,
    )
    assert len(client.paths) == 20
    assert seconds == 4.0
    assert reports == [(2.0, 10)]
    assert sum(tally.total.values()) == 20


class SilentClient:
    def request(self, method, path, body=b"", headers=None):
        raise traffic.AppUnreachable("[Errno 111] Connection refused")


@override_settings(**SECRETS)
def test_it_gives_up_when_the_app_stops_answering():
    clock = FakeClock()
    tally = traffic.Tally()
    with pytest.raises(traffic.AppUnreachable, match="^5 deliveries in a row got no answer$"):
        traffic.run(
            SilentClient(),
            traffic.CallerMix(10, random.Random(1)),
            traffic.Schedule(rate=5, duration=None, report_every=10),
            tally,
            on_report=lambda elapsed, counts: None,
            clock=clock,
            sleep=clock.sleep,
        )
    assert sum(tally.total.values()) == 5
    assert {status for _, status in tally.total} == {"error"}


@override_settings(**SECRETS)
def test_it_follows_every_call_initiation_with_its_post_call_report():
    mix = traffic.CallerMix(10, random.Random(5))
    deliveries = [mix.next_delivery() for _ in range(200)]
    for n, delivery in enumerate(deliveries[:-1]):
        if delivery.endpoint == traffic.INITIATION:
            following = deliveries[n + 1]
            assert following.endpoint == traffic.POST_CALL
            call_sid = json.loads(delivery.body)["call_sid"]
            phone_call = json.loads(following.body)["data"]["metadata"]["phone_call"]
            assert phone_call["call_sid"] == call_sid


def test_it_makes_a_few_leads_call_often():
    mix = traffic.CallerMix(200, random.Random(11))
    callers = Counter(mix._caller()[0] for _ in range(5000))
    known = {data.lead_phone(n) for n in range(200)}
    seeded_calls = sum(n for phone, n in callers.items() if phone in known)
    top_five = sum(callers[data.lead_phone(n)] for n in range(5))
    # Zipf-like: the five most popular of 200 leads make a third of the leads' calls.
    assert top_five / seeded_calls > 1 / 3
    assert callers[data.lead_phone(0)] > callers[data.lead_phone(50)]
    assert 0.10 < 1 - seeded_calls / 5000 < 0.20  # new callers, about 15 %
