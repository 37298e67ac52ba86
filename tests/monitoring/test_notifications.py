"""Notifications: Slack through the one HTTP seam (`monitoring.http.post_json`, replaced here),
e-mail through Django's locmem backend; one delivery row per attempt, bounded retries, and a
permanent error stops that channel."""

import smtplib
import socket
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.test import override_settings

from monitoring import http
from monitoring.alerts import engine, notify, transports
from monitoring.alerts.rules import Rule, Sample
from monitoring.models import Alert, NotificationDelivery

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
WEBHOOK = "https://hooks.slack.test/services/T000/B000/XXXX"
SAMPLE = Sample(caching_enabled=True, redis={}, minute={}, five_minutes={})
FIRING_TEXT = (
    ":red_circle: CRITICAL Redis connection lost\n"
    "value 1.0 (threshold 0.5) since 2026-03-02 15:00:00 UTC\n"
    "https://ops.example.com/dashboard/alerts/"
)


class SlackStub:
    """Stands in for `http.post_json`: records each call and answers from a script."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, dict, float]] = []

    def __call__(self, url: str, payload: dict, timeout: float) -> tuple[int, str]:
        self.calls.append((url, payload, timeout))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture(autouse=True)
def channels():
    with override_settings(
        REDIS_ALERT_WEBHOOK_URL=WEBHOOK,
        ALERT_EMAILS=["ops@example.com", "oncall@example.com"],
        DEFAULT_FROM_EMAIL="opsdash@example.com",
        PUBLIC_BASE_URL="https://ops.example.com",
        NOTIFICATION_RETRIES=3,
        NOTIFICATION_TIMEOUT=2.5,
    ):
        yield


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(notify, "RETRY_DELAYS", (0.0, 0.0, 0.0))


def slack(monkeypatch, *answers) -> SlackStub:
    stub = SlackStub(*answers)
    monkeypatch.setattr(http, "post_json", stub)
    return stub


def slack_only():
    return override_settings(ALERT_EMAILS=[])


def email_only():
    return override_settings(REDIS_ALERT_WEBHOOK_URL="")


class Lever:
    """A measure whose value the test sets (breaching the Redis rule until told otherwise)."""

    def __init__(self) -> None:
        self.value: float | None = 1.0

    def __call__(self, sample: Sample) -> float | None:
        return self.value


def redis_rule(lever: Lever, for_seconds: int = 0) -> Rule:
    return Rule(
        "redis_connection_lost",
        "critical",
        "Redis connection lost",
        lever,
        0.5,
        True,
        0.5,
        for_seconds,
    )


def fire() -> engine.Transition:
    """The Redis-down alert firing at T0: its pending->firing transition."""
    opened, fired = engine.evaluate([redis_rule(Lever())], SAMPLE, T0)
    assert (opened.to_state, fired.to_state) == ("pending", "firing")
    return fired


def resolve() -> engine.Transition:
    lever = Lever()
    lever.value = 0.0
    [resolved] = engine.evaluate([redis_rule(lever)], SAMPLE, T0 + timedelta(minutes=5))
    assert resolved.to_state == "resolved"
    return resolved


def deliveries() -> list[tuple]:
    return list(
        NotificationDelivery.objects.order_by("id").values_list(
            "alert__rule", "channel", "event", "attempt", "status", "error"
        )
    )


def test_it_posts_a_firing_alert_to_slack_once_on_ok(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    with slack_only():
        notify.notify_transition(fire())
    assert stub.calls == [(WEBHOOK, {"text": FIRING_TEXT}, 2.5)]
    assert deliveries() == [("redis_connection_lost", "slack", "firing", 1, "sent", "")]


def test_it_posts_the_resolve_to_slack(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    with slack_only():
        notify.notify_transition(fire())
        notify.notify_transition(resolve())
    texts = [payload["text"] for _, payload, _ in stub.calls]
    assert texts[0].startswith(":red_circle: CRITICAL Redis connection lost\n")
    assert texts[1] == (
        ":large_green_circle: RESOLVED Redis connection lost\n"
        "value 0.0 (threshold 0.5) since 2026-03-02 15:00:00 UTC\n"
        "https://ops.example.com/dashboard/alerts/"
    )
    assert [row[2:5] for row in deliveries()] == [("firing", 1, "sent"), ("resolved", 1, "sent")]


def test_it_labels_a_warning_as_a_warning(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    lever = Lever()
    lever.value = 0.91
    summary = "Redis memory above {threshold:.0%} of maxmemory"
    rule = Rule("redis_memory_high", "warning", summary, lever, 0.8, True, 0.75, 0)
    with slack_only():
        for transition in engine.evaluate([rule], SAMPLE, T0):
            notify.notify_transition(transition)
    [(_, payload, _)] = stub.calls
    assert payload["text"].splitlines()[:2] == [
        ":large_yellow_circle: WARNING Redis memory above 80% of maxmemory",
        "value 0.91 (threshold 0.8) since 2026-03-02 15:00:00 UTC",
    ]


def test_it_retries_after_429_and_logs_both_attempts(monkeypatch):
    stub = slack(monkeypatch, (429, "rate_limited"), (200, "ok"))
    with slack_only():
        notify.notify_transition(fire())
    assert len(stub.calls) == 2
    assert deliveries() == [
        ("redis_connection_lost", "slack", "firing", 1, "failed", "HTTP 429: rate_limited"),
        ("redis_connection_lost", "slack", "firing", 2, "sent", ""),
    ]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ],
)
def test_it_records_a_permanent_slack_error_as_rejected_without_retrying(monkeypatch, status, body):
    stub = slack(monkeypatch, (status, body), (200, "ok"))
    with slack_only():
        notify.notify_transition(fire())
    assert len(stub.calls) == 1
    assert deliveries() == [
        ("redis_connection_lost", "slack", "firing", 1, "rejected", f"HTTP {status}: {body}")
    ]


def test_it_stops_after_notification_retries_server_errors(monkeypatch):
    stub = slack(monkeypatch, (500, "internal_error"))
    with slack_only(), override_settings(NOTIFICATION_RETRIES=4):
        notify.notify_transition(fire())
    assert len(stub.calls) == 4
    assert deliveries() == [
        ("redis_connection_lost", "slack", "firing", n, "failed", "HTTP 500: internal_error")
        for n in (1, 2, 3, 4)
    ]


def test_it_waits_the_retry_delays_between_attempts_and_not_after_the_last(monkeypatch):
    slack(monkeypatch, (503, "unavailable"))
    monkeypatch.setattr(notify, "RETRY_DELAYS", (0.5, 2.0, 5.0))
    waits: list[float] = []
    monkeypatch.setattr(notify, "time", SimpleNamespace(sleep=waits.append))
    with slack_only():
        notify.notify_transition(fire())
    assert waits == [0.5, 2.0]
    assert NotificationDelivery.objects.count() == 3


def test_it_retries_when_slack_does_not_answer(monkeypatch):
    stub = slack(monkeypatch, TimeoutError("timed out"), (200, "ok"))
    with slack_only():
        notify.notify_transition(fire())
    assert len(stub.calls) == 2
    assert deliveries() == [
        ("redis_connection_lost", "slack", "firing", 1, "failed", "no answer: timed out"),
        ("redis_connection_lost", "slack", "firing", 2, "sent", ""),
    ]


def test_it_gives_up_on_an_unreachable_slack_after_the_bound(monkeypatch):
    stub = slack(monkeypatch, ConnectionRefusedError(111, "Connection refused"))
    with slack_only():
        notify.notify_transition(fire())
    assert len(stub.calls) == 3
    assert {row[4] for row in deliveries()} == {"failed"}
    assert [row[3] for row in deliveries()] == [1, 2, 3]


def test_it_mails_a_firing_alert_to_every_address(monkeypatch, mailoutbox):
    stub = slack(monkeypatch, (200, "ok"))
    with email_only():
        notify.notify_transition(fire())
    assert stub.calls == []
    [mail] = mailoutbox
    assert mail.subject == "[opsdash] CRITICAL: Redis connection lost"
    assert mail.from_email == "opsdash@example.com"
    assert mail.to == ["ops@example.com", "oncall@example.com"]
    assert mail.body == (
        "Redis connection lost\n\n"
        "State:     firing\n"
        "Severity:  critical\n"
        "Value:     1.0 (threshold 0.5)\n"
        "Started:   2026-03-02 15:00:00 UTC\n\n"
        "https://ops.example.com/dashboard/alerts/\n\n"
    )
    assert deliveries() == [("redis_connection_lost", "email", "firing", 1, "sent", "")]


def test_it_mails_the_resolve_with_its_time(mailoutbox):
    with email_only():
        notify.notify_transition(fire())
        notify.notify_transition(resolve())
    assert [mail.subject for mail in mailoutbox] == [
        "[opsdash] CRITICAL: Redis connection lost",
        "[opsdash] RESOLVED: Redis connection lost",
    ]
    body = mailoutbox[1].body
    assert "State:     resolved\n" in body
    assert "Value:     0.0 (threshold 0.5)\n" in body
    assert "Resolved:  2026-03-02 15:05:00 UTC\n" in body


def test_it_sends_to_both_channels(monkeypatch, mailoutbox):
    stub = slack(monkeypatch, (200, "ok"))
    notify.notify_transition(fire())
    assert len(stub.calls) == 1
    assert len(mailoutbox) == 1
    assert sorted(row[1:5] for row in deliveries()) == [
        ("email", "firing", 1, "sent"),
        ("slack", "firing", 1, "sent"),
    ]


def test_it_keeps_mailing_when_slack_rejects(monkeypatch, mailoutbox):
    slack(monkeypatch, (404, "channel_not_found"))
    notify.notify_transition(fire())
    assert len(mailoutbox) == 1
    assert sorted(row[1:5] for row in deliveries()) == [
        ("email", "firing", 1, "sent"),
        ("slack", "firing", 1, "rejected"),
    ]


def test_it_records_refused_recipients_as_rejected(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise smtplib.SMTPRecipientsRefused({"ops@example.com": (550, b"no such user")})

    monkeypatch.setattr(transports, "send_mail", refuse)
    with email_only():
        notify.notify_transition(fire())
    assert len(calls) == 1
    [row] = deliveries()
    assert row[1:5] == ("email", "firing", 1, "rejected")
    assert row[5].startswith("recipients refused: ")


def test_it_retries_a_mail_server_that_does_not_answer(monkeypatch):
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(transports, "send_mail", unreachable)
    with email_only():
        notify.notify_transition(fire())
    assert len(calls) == 3
    assert [row[3:6] for row in deliveries()] == [
        (n, "failed", "mail not sent: [Errno 111] Connection refused") for n in (1, 2, 3)
    ]


def test_it_sends_a_test_notification_through_every_channel(monkeypatch, mailoutbox):
    stub = slack(monkeypatch, (200, "ok"))
    assert notify.send_test_notification() == {"slack": "sent", "email": "sent"}
    assert stub.calls == [
        (
            WEBHOOK,
            {"text": ":white_check_mark: opsdash test notification: this channel receives alerts."},
            2.5,
        )
    ]
    [mail] = mailoutbox
    assert mail.subject == "[opsdash] test notification"
    assert mail.body.startswith("This is a test notification from opsdash")
    assert deliveries() == [
        (None, "slack", "test", 1, "sent", ""),
        (None, "email", "test", 1, "sent", ""),
    ]
    assert NotificationDelivery.objects.filter(alert=None).count() == 2


def test_it_reports_a_failed_test_notification_per_channel(monkeypatch, mailoutbox):
    slack(monkeypatch, (403, "action_prohibited"))
    assert notify.send_test_notification() == {"slack": "rejected", "email": "sent"}


def test_it_reports_no_channel_when_none_is_configured(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    with override_settings(REDIS_ALERT_WEBHOOK_URL="", ALERT_EMAILS=[]):
        assert notify.send_test_notification() == {}
        notify.notify_transition(fire())
    assert stub.calls == []
    assert NotificationDelivery.objects.count() == 0


def test_it_tells_nobody_about_a_pending_that_went_away(monkeypatch, mailoutbox):
    stub = slack(monkeypatch, (200, "ok"))
    lever = Lever()
    rule = redis_rule(lever, for_seconds=60)
    moves = engine.evaluate([rule], SAMPLE, T0)
    lever.value = 0.0
    moves += engine.evaluate([rule], SAMPLE, T0 + timedelta(seconds=10))
    assert [(t.from_state, t.to_state) for t in moves] == [("", "pending"), ("pending", "resolved")]
    for transition in moves:
        notify.notify_transition(transition)
    assert stub.calls == []
    assert mailoutbox == []
    assert NotificationDelivery.objects.count() == 0
    assert Alert.objects.get().state == "resolved"


@pytest.fixture
def garbling_server():
    """A local server that answers every request with bytes that are not HTTP."""
    server = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed by the test
            with client:
                requests.append(client.recv(65536))
                client.sendall(b"garbage\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/services/T000/B000/XXXX", requests
    server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
    server.close()
    thread.join(10)


def test_it_records_a_reply_that_is_not_http_as_a_failed_attempt(garbling_server, mailoutbox):
    url, requests = garbling_server
    with override_settings(REDIS_ALERT_WEBHOOK_URL=url):
        notify.notify_transition(fire())
    assert len(requests) == 3
    assert sorted(row[1:5] for row in deliveries()) == [
        ("email", "firing", 1, "sent"),
        ("slack", "firing", 1, "failed"),
        ("slack", "firing", 2, "failed"),
        ("slack", "firing", 3, "failed"),
    ]
    assert len(mailoutbox) == 1
