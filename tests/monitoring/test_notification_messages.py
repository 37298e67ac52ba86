"""What a notification says: Slack's text and the e-mail, each linking to its alert's page,
for firing, resolved and warning alerts; the test message; nobody told when no channel is set
or a pending alert went away before it fired."""

from datetime import timedelta

import pytest
from django.test import override_settings

from monitoring.alerts import engine, notify
from monitoring.alerts.rules import Rule
from monitoring.models import Alert, Notification, NotificationDelivery
from tests.monitoring.notification_support import (
    SAMPLE,
    T0,
    WEBHOOK,
    Lever,
    channel_settings,
    deliver,
    deliver_all,
    deliveries,
    email_only,
    fire,
    redis_rule,
    resolve,
    slack,
    slack_only,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def channels():
    with channel_settings():
        yield


def link(alert: Alert) -> str:
    return f"https://ops.example.com/dashboard/alerts/{alert.id}/"


def test_it_posts_a_firing_alert_to_slack_once_on_ok_with_a_link_to_the_alert(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    with slack_only():
        alert = fire().alert
        deliver_all()
    text = (
        ":red_circle: CRITICAL Redis connection lost\n"
        "value 1.0 (threshold 0.5) since 2026-03-02 15:00:00 UTC\n"
        f"{link(alert)}"
    )
    assert stub.calls == [(WEBHOOK, {"text": text}, 2.5)]
    assert deliveries() == [("redis_connection_lost", "slack", "firing", 1, "sent", "")]


def test_it_posts_the_resolve_to_slack(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    with slack_only():
        alert = fire().alert
        resolve()
        deliver_all()
    texts = [payload["text"] for _, payload, _ in stub.calls]
    assert texts[0].startswith(":red_circle: CRITICAL Redis connection lost\n")
    assert texts[1] == (
        ":large_green_circle: RESOLVED Redis connection lost\n"
        "value 0.0 (threshold 0.5) since 2026-03-02 15:00:00 UTC\n"
        f"{link(alert)}"
    )
    assert [row[2:5] for row in deliveries()] == [("firing", 1, "sent"), ("resolved", 1, "sent")]


def test_it_labels_a_warning_as_a_warning(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    summary = "Redis memory above {threshold:.0%} of maxmemory"
    rule = Rule("redis_memory_high", "warning", summary, Lever(0.91), 0.8, True, 0.75, 0)
    with slack_only():
        engine.evaluate([rule], SAMPLE, T0)
        deliver_all()
    [(_, payload, _)] = stub.calls
    assert payload["text"].splitlines()[:2] == [
        ":large_yellow_circle: WARNING Redis memory above 80% of maxmemory",
        "value 0.91 (threshold 0.8) since 2026-03-02 15:00:00 UTC",
    ]


def test_it_mails_a_firing_alert_to_every_address(monkeypatch, mailoutbox):
    stub = slack(monkeypatch, (200, "ok"))
    with email_only():
        alert = fire().alert
        deliver_all()
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
        f"{link(alert)}\n\n"
    )
    assert deliveries() == [("redis_connection_lost", "email", "firing", 1, "sent", "")]


def test_it_mails_the_resolve_with_its_time(mailoutbox):
    with email_only():
        fire()
        deliver()
        resolve()
        deliver()
    assert [mail.subject for mail in mailoutbox] == [
        "[opsdash] CRITICAL: Redis connection lost",
        "[opsdash] RESOLVED: Redis connection lost",
    ]
    body = mailoutbox[1].body
    assert "State:     resolved\n" in body
    assert "Value:     0.0 (threshold 0.5)\n" in body
    assert "Resolved:  2026-03-02 15:05:00 UTC\n" in body


def test_it_keeps_the_value_of_the_transition_not_the_alerts_latest(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    with slack_only():
        fire()
        Alert.objects.update(value=7.0)  # a later round moved the alert's value on
        deliver_all()
    [(_, payload, _)] = stub.calls
    assert payload["text"].splitlines()[1].startswith("value 1.0 (threshold 0.5)")


def test_it_sends_to_both_channels(monkeypatch, mailoutbox):
    stub = slack(monkeypatch, (200, "ok"))
    fire()
    deliver_all()
    assert len(stub.calls) == 1
    assert len(mailoutbox) == 1
    assert sorted(row[1:5] for row in deliveries()) == [
        ("email", "firing", 1, "sent"),
        ("slack", "firing", 1, "sent"),
    ]


def test_it_sends_a_test_notification_through_every_channel_at_once(monkeypatch, mailoutbox):
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
    assert Notification.objects.count() == 0  # sent now, not through the outbox


def test_it_reports_a_failed_test_notification_per_channel(monkeypatch, mailoutbox):
    slack(monkeypatch, (403, "action_prohibited"))
    assert notify.send_test_notification() == {"slack": "rejected", "email": "sent"}
    slack(monkeypatch, (503, "unavailable"))
    assert notify.send_test_notification() == {"slack": "failed", "email": "sent"}


def test_it_reports_no_channel_when_none_is_configured(monkeypatch):
    stub = slack(monkeypatch, (200, "ok"))
    with override_settings(REDIS_ALERT_WEBHOOK_URL="", ALERT_EMAILS=[]):
        assert notify.send_test_notification() == {}
        fire()
        assert deliver() == 0
    assert stub.calls == []
    assert Notification.objects.count() == 0
    assert NotificationDelivery.objects.count() == 0


def test_it_tells_nobody_about_a_pending_that_went_away(monkeypatch, mailoutbox):
    stub = slack(monkeypatch, (200, "ok"))
    lever = Lever()
    rule = redis_rule(lever, for_seconds=60)
    moves = engine.evaluate([rule], SAMPLE, T0)
    lever.value = 0.0
    moves += engine.evaluate([rule], SAMPLE, T0 + timedelta(seconds=10))
    assert [(t.from_state, t.to_state) for t in moves] == [("", "pending"), ("pending", "resolved")]
    assert deliver() == 0
    assert stub.calls == []
    assert mailoutbox == []
    assert Notification.objects.count() == 0
    assert Alert.objects.get().state == "resolved"
