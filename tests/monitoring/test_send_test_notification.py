"""`manage.py send_test_notification`: every configured channel, through the single HTTP seam."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from monitoring import http
from monitoring.models import NotificationDelivery

pytestmark = pytest.mark.django_db


@override_settings(
    REDIS_ALERT_WEBHOOK_URL="https://hooks.example.test/T0/B0/x", ALERT_EMAILS=["ops@example.test"]
)
def test_it_sends_a_test_message_to_every_channel(monkeypatch, mailoutbox):
    calls = []
    monkeypatch.setattr(
        http, "post_json", lambda url, payload, timeout: calls.append(url) or (200, "ok")
    )
    out = StringIO()
    call_command("send_test_notification", stdout=out)
    assert out.getvalue() == "slack: sent\nemail: sent\n"
    assert calls == ["https://hooks.example.test/T0/B0/x"]
    assert [m.subject for m in mailoutbox] == ["[opsdash] test notification"]
    assert sorted(NotificationDelivery.objects.values_list("channel", "event", "status")) == [
        ("email", "test", "sent"),
        ("slack", "test", "sent"),
    ]


@override_settings(REDIS_ALERT_WEBHOOK_URL="", ALERT_EMAILS=[])
def test_it_fails_when_no_channel_is_configured():
    with pytest.raises(CommandError, match="no alert channel is configured"):
        call_command("send_test_notification", stdout=StringIO())


@override_settings(REDIS_ALERT_WEBHOOK_URL="https://hooks.example.test/T0/B0/x", ALERT_EMAILS=[])
def test_it_fails_when_a_channel_refuses(monkeypatch):
    monkeypatch.setattr(http, "post_json", lambda url, payload, timeout: (404, "channel_not_found"))
    with pytest.raises(CommandError, match="not delivered: slack"):
        call_command("send_test_notification", stdout=StringIO())
    assert NotificationDelivery.objects.get().status == "rejected"
