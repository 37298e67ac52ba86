"""The notification outbox and its worker: rows written with the transition, the evaluator
never calling a transport, retries after a doubling delay, a permanent error or the last
attempt giving up (the channel then shows as failing), claims that keep two workers from
sending one row twice and let another take over from a dead one."""

import smtplib
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import close_old_connections
from django.test import override_settings

from monitoring.alerts import delivery, evaluator, transports
from monitoring.alerts.rules import Rule
from monitoring.models import Alert, AlertTransition, Notification
from tests.monitoring.notification_support import (
    channel_settings,
    deliver,
    deliver_all,
    deliveries,
    email_only,
    fire,
    slack,
    slack_only,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def channels():
    with channel_settings():
        yield


def outbox() -> list[tuple]:
    return list(
        Notification.objects.order_by("id").values_list("channel", "event", "status", "attempts")
    )


def test_it_writes_one_row_per_channel_with_the_transition_and_sends_nothing(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    fired = fire()
    assert stub.calls == []
    assert outbox() == [("slack", "firing", "pending", 0), ("email", "firing", "pending", 0)]
    assert {n.alert_id for n in Notification.objects.all()} == {fired.alert.id}
    assert AlertTransition.objects.filter(to_state="firing").count() == 1


def test_it_loses_the_rows_with_a_transition_that_rolled_back(monkeypatch):
    slack(monkeypatch, (200, "ok"))

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(AlertTransition.objects, "create", explode)
    with pytest.raises(RuntimeError):
        fire()
    assert Notification.objects.count() == 0
    assert Alert.objects.count() == 0


def test_it_evaluates_without_waiting_on_a_transport_that_hangs(monkeypatch):
    entered = threading.Event()

    def hang(url, payload, timeout):
        entered.set()
        time.sleep(60)

    monkeypatch.setattr(transports.http, "post_json", hang)
    breaching = Rule(
        "redis_connection_lost", "critical", "Redis down", lambda s: 1.0, 0.5, True, 0.5, 0
    )
    monkeypatch.setattr(evaluator, "default_rules", lambda: [breaching])
    with slack_only(), override_settings(REDIS_URL=""):
        _, transitions = evaluator.evaluate_once()
    assert [t.to_state for t in transitions] == ["pending", "firing"]
    assert not entered.is_set()
    assert outbox() == [("slack", "firing", "pending", 0)]


def test_it_retries_after_429_once_its_backoff_has_passed(monkeypatch):
    stub = slack(monkeypatch, (429, "rate_limited"), (200, "ok"))
    now = datetime(2026, 3, 2, 15, 0, 1, tzinfo=UTC)
    with slack_only():
        fire()
        assert delivery.deliver_due(now) == 1
        row = Notification.objects.get()
        assert (row.status, row.attempts, row.due_at) == ("pending", 1, now + timedelta(seconds=5))
        assert row.last_error == "HTTP 429: rate_limited"
        assert delivery.deliver_due(now + timedelta(seconds=4.9)) == 0
        assert delivery.deliver_due(now + timedelta(seconds=5)) == 1
    assert len(stub.calls) == 2
    assert deliveries() == [
        ("redis_connection_lost", "slack", "firing", 1, "failed", "HTTP 429: rate_limited"),
        ("redis_connection_lost", "slack", "firing", 2, "sent", ""),
    ]
    assert outbox() == [("slack", "firing", "sent", 2)]


def test_it_doubles_the_delay_between_attempts_up_to_its_cap():
    with override_settings(NOTIFICATION_BACKOFF_SECONDS=5.0):
        assert [delivery.backoff(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ],
)
def test_it_gives_up_on_a_permanent_slack_error_at_once(monkeypatch, status, body):
    stub = slack(monkeypatch, (status, body), (200, "ok"))
    with slack_only():
        fire()
        deliver_all()
    assert len(stub.calls) == 1
    assert deliveries() == [
        ("redis_connection_lost", "slack", "firing", 1, "rejected", f"HTTP {status}: {body}")
    ]
    assert outbox() == [("slack", "firing", "failed", 1)]


def test_it_gives_up_after_notification_retries_server_errors(monkeypatch):
    stub = slack(monkeypatch, (500, "internal_error"))
    with slack_only(), override_settings(NOTIFICATION_RETRIES=4):
        fire()
        deliver_all()
    assert len(stub.calls) == 4
    assert deliveries() == [
        ("redis_connection_lost", "slack", "firing", n, "failed", "HTTP 500: internal_error")
        for n in (1, 2, 3, 4)
    ]
    row = Notification.objects.get()
    assert (row.status, row.attempts, row.last_error) == ("failed", 4, "HTTP 500: internal_error")
    assert row.finished_at is not None


def test_it_retries_when_slack_does_not_answer(monkeypatch):
    stub = slack(monkeypatch, TimeoutError("timed out"), (200, "ok"))
    with slack_only():
        fire()
        deliver_all()
    assert len(stub.calls) == 2
    assert deliveries() == [
        ("redis_connection_lost", "slack", "firing", 1, "failed", "no answer: timed out"),
        ("redis_connection_lost", "slack", "firing", 2, "sent", ""),
    ]


def test_it_gives_up_on_an_unreachable_slack_after_the_bound(monkeypatch):
    stub = slack(monkeypatch, ConnectionRefusedError(111, "Connection refused"))
    with slack_only():
        fire()
        deliver_all()
    assert len(stub.calls) == 3
    assert {row[4] for row in deliveries()} == {"failed"}
    assert [row[3] for row in deliveries()] == [1, 2, 3]


def test_it_counts_a_transport_bug_as_a_failed_attempt(monkeypatch):
    slack(monkeypatch, KeyError("boom"), (200, "ok"))
    with slack_only():
        fire()
        deliver_all()
    assert [row[3:6] for row in deliveries()] == [
        (1, "failed", "KeyError: 'boom'"),
        (2, "sent", ""),
    ]


def test_it_keeps_mailing_when_slack_rejects(monkeypatch, mailoutbox):
    slack(monkeypatch, (404, "channel_not_found"))
    fire()
    deliver_all()
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
        fire()
        deliver_all()
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
        fire()
        deliver_all()
    assert len(calls) == 3
    assert [row[3:6] for row in deliveries()] == [
        (n, "failed", "mail not sent: [Errno 111] Connection refused") for n in (1, 2, 3)
    ]


def test_it_gives_up_on_a_channel_no_longer_configured():
    with slack_only():
        fire()
    with override_settings(REDIS_ALERT_WEBHOOK_URL="", ALERT_EMAILS=[]):
        deliver()
    assert outbox() == [("slack", "firing", "failed", 1)]
    assert deliveries()[0][4:] == ("rejected", "channel no longer configured")


def test_it_shows_a_channel_failing_until_a_message_gets_through(monkeypatch):
    slack(monkeypatch, (404, "channel_not_found"))
    with slack_only():
        assert delivery.channel_health()[0]["failing"] is False
        alert = fire().alert
        deliver()
        [health] = delivery.channel_health()
        assert health == {
            "channel": "slack",
            "failing": True,
            "last_status": "failed",
            "last_error": "HTTP 404: channel_not_found",
            "last_at": health["last_at"],
            "last_alert_id": alert.id,
            "pending": 0,
        }
        slack(monkeypatch, (200, "ok"))
        Alert.objects.update(state="resolved")
        fire(datetime(2026, 3, 2, 16, 0, tzinfo=UTC))
        assert delivery.channel_health()[0]["pending"] == 1
        deliver()
        [health] = delivery.channel_health()
    assert (health["failing"], health["last_status"], health["pending"]) == (False, "sent", 0)


def test_it_lets_one_worker_only_take_a_row():
    with slack_only():
        fire()
    now = datetime.now(UTC)
    first = delivery.claim(now)
    assert first is not None
    assert delivery.claim(now) is None
    lapsed = now + timedelta(seconds=delivery.claim_seconds() + 0.001)
    second = delivery.claim(lapsed)  # the first worker died mid-send: its claim lapsed
    assert second is not None and second.pk == first.pk


@pytest.mark.django_db(transaction=True)
def test_it_sends_each_row_once_with_two_workers_at_once(monkeypatch):
    sent, lock = [], threading.Lock()

    def slow_slack(url, payload, timeout):
        time.sleep(0.02)
        with lock:
            sent.append(payload["text"])
        return 200, "ok"

    monkeypatch.setattr(transports.http, "post_json", slow_slack)
    with slack_only():
        alert = fire().alert
        for n in range(11):
            Notification.objects.create(
                alert=alert, channel="slack", event="firing", value=n, due_at=datetime.now(UTC)
            )
        counts = []

        def worker():
            try:
                counts.append(deliver())
            finally:
                close_old_connections()

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert sum(counts) == 12
    assert len(sent) == 12
    assert Notification.objects.filter(status="sent").count() == 12
    assert sorted(row[3] for row in deliveries()) == [1] * 12


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
        fire()
        deliver_all()
    assert len(requests) == 3
    assert sorted(row[1:5] for row in deliveries()) == [
        ("email", "firing", 1, "sent"),
        ("slack", "firing", 1, "failed"),
        ("slack", "firing", 2, "failed"),
        ("slack", "firing", 3, "failed"),
    ]
    assert len(mailoutbox) == 1
