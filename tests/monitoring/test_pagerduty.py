"""PagerDuty as a notification channel (Events API v2), against a local stand-in for the Events
API: one incident per alert (one dedup_key) triggered on firing, acknowledged with the alert,
resolved with it; a 400 given up at once, 429 and 5xx retried, one alert's events kept in
order; the test message opening no incident; the routing key never shown."""

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client, override_settings

from monitoring.alerts import engine, transports
from monitoring.models import Alert, Notification, NotificationDelivery
from monitoring.validation import checks
from monitoring.validation.registry import ValidationContext, passed
from tests.monitoring.notification_support import (
    SAMPLE,
    T0,
    Lever,
    channel_settings,
    deliver,
    deliver_all,
    deliveries,
    fire,
    redis_rule,
    resolve,
)

pytestmark = pytest.mark.django_db

ROUTING_KEY = "R0UT1NG0KEY0f3e2d1c0b9a8f7e6d5c4"
ACCEPTED = (202, '{"status":"success","message":"Event processed","dedup_key":"k"}')
INVALID = (400, '{"status":"invalid event","message":"Event object is invalid"}')


class EventsAPI(ThreadingHTTPServer):
    """A local stand-in for PagerDuty's Events API v2: keeps every POST and answers from a
    script (the last answer repeats), 202 by default."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.answers: list[tuple[int, str]] = [ACCEPTED]
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), self.Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v2/enqueue"

    def answer(self) -> tuple[int, str]:
        with self.lock:
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def actions(self) -> list[str]:
        return [post["body"]["event_action"] for post in self.posts]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.server.posts.append(
                {
                    "path": self.path,
                    "content_type": self.headers["Content-Type"],
                    "body": json.loads(body),
                }
            )
            status, text = self.server.answer()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args) -> None:
            pass


@pytest.fixture
def events_api(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server = EventsAPI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with (
        channel_settings(),
        override_settings(
            REDIS_ALERT_WEBHOOK_URL="",
            ALERT_EMAILS=[],
            PAGERDUTY_ROUTING_KEY=ROUTING_KEY,
            PAGERDUTY_EVENTS_URL=server.url,
        ),
    ):
        yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def outbox() -> list[tuple]:
    return list(
        Notification.objects.order_by("id").values_list("channel", "event", "status", "attempts")
    )


def test_it_triggers_acknowledges_and_resolves_one_incident_per_alert(events_api):
    alert = fire().alert
    deliver()
    engine.acknowledge(alert.id, "ops@example.com", "on it", T0 + timedelta(minutes=1))
    deliver()
    resolve()
    deliver()
    key = f"opsdash-alert-{alert.id}@ops.example.com"
    page = f"https://ops.example.com/dashboard/alerts/{alert.id}/"
    assert [post["path"] for post in events_api.posts] == ["/v2/enqueue"] * 3
    assert {post["content_type"] for post in events_api.posts} == {"application/json"}
    trigger, acknowledge, resolved = (post["body"] for post in events_api.posts)
    assert trigger == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": "Redis connection lost",
            "source": "ops.example.com",
            "severity": "critical",
            "timestamp": "2026-03-02T15:00:00+00:00",
            "component": "opsdash",
            "class": "redis_connection_lost",
            "custom_details": {
                "rule": "redis_connection_lost",
                "value": 1.0,
                "threshold": 0.5,
                "started_at": "2026-03-02T15:00:00+00:00",
            },
        },
        "links": [{"href": page, "text": "The alert in opsdash"}],
        "client": "opsdash",
        "client_url": page,
    }
    assert acknowledge == {
        "routing_key": ROUTING_KEY,
        "event_action": "acknowledge",
        "dedup_key": key,
    }
    assert resolved == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": key}
    assert outbox() == [
        ("pagerduty", "firing", "sent", 1),
        ("pagerduty", "acknowledged", "sent", 1),
        ("pagerduty", "resolved", "sent", 1),
    ]


def test_it_gives_each_alert_and_each_deployment_its_own_dedup_key(events_api):
    first = fire().alert
    resolve()
    second = fire(T0 + timedelta(hours=1)).alert
    deliver_all()
    keys = [post["body"]["dedup_key"] for post in events_api.posts]
    assert keys == [
        f"opsdash-alert-{first.id}@ops.example.com",
        f"opsdash-alert-{first.id}@ops.example.com",
        f"opsdash-alert-{second.id}@ops.example.com",
    ]
    with override_settings(PUBLIC_BASE_URL="https://staging.example.com/ops"):
        assert transports.dedup_key(7) == "opsdash-alert-7@staging.example.com/ops"


def test_it_acknowledges_the_incident_when_staff_acknowledge_on_the_dashboard(events_api):
    alert = fire().alert
    deliver()
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("root", "", "pw"))
    answer = staff.post(f"/dashboard/alerts/{alert.id}/acknowledge", {"note": "on it"})
    assert answer.status_code == 302
    deliver()
    assert events_api.actions() == ["trigger", "acknowledge"]
    assert outbox()[-1] == ("pagerduty", "acknowledged", "sent", 1)


def test_it_tells_only_pagerduty_of_an_acknowledgement(events_api):
    with override_settings(
        REDIS_ALERT_WEBHOOK_URL="https://hooks.slack.test/x", ALERT_EMAILS=["a@b.c"]
    ):
        alert = fire().alert
        engine.acknowledge(alert.id, "ops", "", T0 + timedelta(minutes=1))
    assert [row[:2] for row in outbox()] == [
        ("slack", "firing"),
        ("email", "firing"),
        ("pagerduty", "firing"),
        ("pagerduty", "acknowledged"),
    ]


def test_it_tells_no_one_of_acknowledging_an_alert_that_is_not_firing(events_api):
    engine.evaluate([redis_rule(Lever(), for_seconds=60)], SAMPLE, T0)
    pending = Alert.objects.get()
    engine.acknowledge(pending.id, "ops", "", T0 + timedelta(seconds=1))
    assert outbox() == []
    Alert.objects.all().delete()
    alert = fire().alert
    resolve()
    engine.acknowledge(alert.id, "ops", "too late", T0 + timedelta(hours=1))
    assert [row[1] for row in outbox()] == ["firing", "resolved"]


def test_it_gives_up_at_once_on_an_invalid_event(events_api):
    events_api.answers = [INVALID]
    fire()
    deliver_all()
    assert len(events_api.posts) == 1
    assert outbox() == [("pagerduty", "firing", "failed", 1)]
    assert deliveries() == [
        ("redis_connection_lost", "pagerduty", "firing", 1, "rejected", f"HTTP 400: {INVALID[1]}")
    ]


@pytest.mark.parametrize(
    "answer",
    [
        (429, '{"status":"throttle event","message":"Too many requests"}'),
        (500, ""),
    ],
)
def test_it_retries_rate_limiting_and_server_errors(events_api, answer):
    events_api.answers = [answer, ACCEPTED]
    fire()
    deliver()
    assert outbox() == [("pagerduty", "firing", "pending", 1)]
    deliver(datetime.now(UTC) + timedelta(days=2))
    assert events_api.actions() == ["trigger", "trigger"]
    assert deliveries() == [
        (
            "redis_connection_lost",
            "pagerduty",
            "firing",
            1,
            "failed",
            f"HTTP {answer[0]}: {answer[1]}",
        ),
        ("redis_connection_lost", "pagerduty", "firing", 2, "sent", ""),
    ]


def test_it_resolves_only_after_a_retried_trigger_got_through(events_api):
    events_api.answers = [(503, ""), ACCEPTED]
    fire()
    resolve()
    deliver_all()
    assert events_api.actions() == ["trigger", "trigger", "resolve"]
    assert outbox() == [
        ("pagerduty", "firing", "sent", 2),
        ("pagerduty", "resolved", "sent", 1),
    ]


def test_it_retries_an_events_api_that_does_not_answer(events_api):
    with override_settings(PAGERDUTY_EVENTS_URL="http://127.0.0.1:1/v2/enqueue"):
        fire()
        deliver()
    assert outbox() == [("pagerduty", "firing", "pending", 1)]
    [row] = deliveries()
    assert row[4] == "failed" and row[5].startswith("no answer: ")


def test_it_never_shows_the_routing_key(events_api, caplog):
    caplog.set_level(logging.DEBUG)
    # A proxy (or a provider) that quotes the request back in its error.
    events_api.answers = [(400, json.dumps({"message": f"bad routing_key {ROUTING_KEY}"}))]
    alert = fire().alert
    deliver_all()
    errors = list(Notification.objects.values_list("last_error", flat=True)) + list(
        NotificationDelivery.objects.values_list("error", flat=True)
    )
    assert errors == [
        'HTTP 400: {"message": "bad routing_key [routing key]"}',
        'HTTP 400: {"message": "bad routing_key [routing key]"}',
    ]
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("root", "", "pw"))
    pages = [staff.get(f"/dashboard/alerts/{alert.id}/"), staff.get("/dashboard/")]
    assert [page.status_code for page in pages] == [200, 200]
    shown = "\n".join(page.content.decode() for page in pages) + caplog.text
    assert "[routing key]" in shown
    assert ROUTING_KEY not in shown
    assert checks.notifications(ValidationContext()).detail == (
        'pagerduty: last message given up (HTTP 400: {"message": "bad routing_key [routing key]"})'
    )


def test_it_sends_a_test_event_that_opens_no_incident(events_api):
    out = StringIO()
    call_command("send_test_notification", stdout=out)
    assert out.getvalue() == "pagerduty: sent\n"
    assert [post["body"] for post in events_api.posts] == [
        {
            "routing_key": ROUTING_KEY,
            "event_action": "resolve",
            "dedup_key": "opsdash-test@ops.example.com",
        }
    ]
    assert list(NotificationDelivery.objects.values_list("channel", "event", "status")) == [
        ("pagerduty", "test", "sent")
    ]


def test_it_counts_pagerduty_as_a_channel_only_with_a_routing_key(events_api):
    assert checks.notifications(ValidationContext()) == passed("alerts notify: pagerduty")
    with override_settings(PAGERDUTY_ROUTING_KEY=""):
        assert [t.name for t in transports.configured_transports()] == []
        fire()
    assert outbox() == []
