"""Where the dashboard shows notifications: a channel given up on turns the overview's
Notifications tile red with its error, messages left waiting say no worker runs, and an alert's
page lists each message with its state."""

import re
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from monitoring.models import Alert, Notification
from tests.monitoring.dashboard_support import page
from tests.personas import signed_in, viewer

pytestmark = pytest.mark.django_db

WEBHOOK = "https://hooks.slack.test/services/T000/B000/XXXX"


@pytest.fixture(autouse=True)
def slack_configured():
    with override_settings(REDIS_ALERT_WEBHOOK_URL=WEBHOOK, ALERT_EMAILS=[]):
        yield


@pytest.fixture
def sam():
    return signed_in(viewer())


def an_alert() -> Alert:
    now = timezone.now()
    return Alert.objects.create(
        rule="redis_connection_lost",
        severity="critical",
        state="firing",
        summary="Redis connection lost",
        value=1.0,
        threshold=0.5,
        started_at=now,
        fired_at=now,
    )


def message(alert: Alert, **fields) -> Notification:
    values = {"channel": "slack", "event": "firing", "value": 1.0, "due_at": timezone.now()}
    return Notification.objects.create(alert=alert, **{**values, **fields})


def tile(sam) -> tuple[str, str]:
    """The Notifications tile's colour and its line."""
    health = page(sam.get("/dashboard/fragments/health"))
    status = health.attrs("tile-notifications")["data-status"]
    return status, health.text("tile-notifications-detail")


def message_rows(html: str) -> list[list[str]]:
    section = html.split('id="messages-heading"', 1)[1].split("</section>", 1)[0]
    body = section.split("<tbody>", 1)[1]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def test_it_shows_a_channel_given_up_on_as_a_red_tile_with_its_error(sam):
    message(
        an_alert(),
        status="failed",
        attempts=1,
        last_error="HTTP 404: channel_not_found",
        finished_at=timezone.now(),
    )
    assert tile(sam) == ("fail", "slack failing: HTTP 404: channel_not_found")


def test_it_says_when_messages_wait_with_no_worker_sending_them(sam):
    message(an_alert(), due_at=timezone.now() - timedelta(minutes=5))
    assert tile(sam) == ("fail", "1 waiting over a minute: is a notification worker running?")


def test_it_shows_a_channel_green_once_its_last_message_got_through(sam):
    alert = an_alert()
    earlier = timezone.now() - timedelta(minutes=1)
    message(alert, status="failed", attempts=6, last_error="HTTP 500: x", finished_at=earlier)
    message(alert, event="resolved", status="sent", attempts=1, finished_at=timezone.now())
    assert tile(sam) == ("pass", "slack: sent")


def test_it_lists_an_alerts_messages_on_its_page(sam):
    alert = an_alert()
    message(
        alert, status="failed", attempts=3, last_error="HTTP 500: x", finished_at=timezone.now()
    )
    message(alert, channel="email", status="pending", attempts=1, last_error="mail not sent: y")
    response = sam.get(f"/dashboard/alerts/{alert.id}/")
    assert response.status_code == 200
    cells = message_rows(response.content.decode())
    assert [row[:4] + row[5:] for row in cells] == [
        ["email", "firing", "pending", "1", "mail not sent: y"],
        ["slack", "firing", "failed: given up", "3", "HTTP 500: x"],
    ]
