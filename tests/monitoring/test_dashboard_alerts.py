"""The dashboard's alerts: filtered by state, severity and time, each with its transitions and
notification deliveries, listed on the overview, acknowledged (never redirected off site)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import (
    Alert,
    AlertTransition,
    NotificationDelivery,
)
from tests.monitoring.dashboard_support import page

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_configured")]


# --- alerts ---------------------------------------------------------------------------------


def make_alert(rule: str, severity: str, state: str, started: timedelta, resolved=None) -> Alert:
    now = timezone.now()
    return Alert.objects.create(
        rule=rule,
        severity=severity,
        state=state,
        summary=f"{rule} summary",
        value=0.2,
        threshold=0.3,
        started_at=now - started,
        fired_at=now - started if state != "pending" else None,
        resolved_at=now - resolved if resolved is not None else None,
    )


@pytest.fixture
def alerts():
    return {
        "firing": make_alert("hit_rate_critical", "critical", "firing", timedelta(minutes=10)),
        "pending": make_alert("response_time_warning", "warning", "pending", timedelta(minutes=1)),
        "recent": make_alert(
            "redis_memory_warning", "warning", "resolved", timedelta(hours=3), timedelta(hours=2)
        ),
        "old": make_alert(
            "redis_connection_lost", "critical", "resolved", timedelta(days=3), timedelta(days=2)
        ),
    }


def listed(response, alerts) -> list[str]:
    names = {f"alert-row-{alert.id}": name for name, alert in alerts.items()}
    return [names[testid] for testid in page(response).ids("alert-row-")]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["pending", "firing", "recent", "old"]),
        ("?state=active", ["pending", "firing"]),
        ("?state=resolved", ["recent", "old"]),
        ("?severity=critical", ["firing", "old"]),
        ("?state=all&severity=warning", ["pending", "recent"]),
        ("?period=24h", ["pending", "firing", "recent"]),
        ("?period=1h", ["pending", "firing"]),
        ("?state=resolved&severity=warning&period=24h", ["recent"]),
    ],
)
def test_it_filters_alerts_by_state_severity_and_time(sam, alerts, query, expected):
    assert listed(sam.get(f"/dashboard/alerts/{query}"), alerts) == expected


def test_it_ignores_filters_it_does_not_understand(sam, alerts):
    response = sam.get("/dashboard/alerts/?state=bogus&severity=loud")
    assert listed(response, alerts) == ["pending", "firing", "recent", "old"]
    assert "alert-filter-error" in page(response)


def test_it_shows_an_alerts_transitions_and_notification_deliveries(sam, alerts):
    alert = alerts["firing"]
    pending = AlertTransition.objects.create(
        alert=alert, at=alert.started_at, from_state="", to_state="pending", value=0.2
    )
    fired = AlertTransition.objects.create(
        alert=alert, at=alert.fired_at, from_state="pending", to_state="firing", value=0.1
    )
    sent = NotificationDelivery.objects.create(
        alert=alert, channel="slack", event="firing", attempt=1, status="sent"
    )
    rejected = NotificationDelivery.objects.create(
        alert=alert, channel="email", event="firing", attempt=1, status="rejected", error="550"
    )

    detail = page(sam.get(f"/dashboard/alerts/{alert.id}/"))

    assert detail.ids("transition-") == [f"transition-{pending.id}", f"transition-{fired.id}"]
    assert detail.ids("delivery-") == [f"delivery-{rejected.id}", f"delivery-{sent.id}"]
    assert detail.attrs(f"delivery-{rejected.id}")["data-status"] == "rejected"
    assert detail.text("alert-state") == "firing"


def test_it_lists_the_active_alerts_on_the_overview_with_an_acknowledge_button(sam, alerts):
    overview = page(sam.get("/dashboard/"))
    assert overview.ids("alert-ack-") == [
        f"alert-ack-{alerts['pending'].id}",
        f"alert-ack-{alerts['firing'].id}",
    ]
    assert overview.text("active-alert-count") == "2"
    assert "hidden" in overview.attrs("no-active-alerts")


def test_it_acknowledges_an_alert_and_returns_to_the_page_it_came_from(sam, alerts):
    alert = alerts["firing"]
    response = sam.post(
        f"/dashboard/alerts/{alert.id}/acknowledge", {"note": "on it", "next": "/dashboard/"}
    )
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledgement_note) == ("sam", "on it")
    overview = page(sam.get("/dashboard/"))
    assert "hidden" in overview.attrs(f"ack-form-{alert.id}")
    assert overview.text(f"acknowledged-{alert.id}") == "Acknowledged by sam"


def test_it_never_redirects_an_acknowledgement_off_site(sam, alerts):
    alert = alerts["pending"]
    response = sam.post(
        f"/dashboard/alerts/{alert.id}/acknowledge", {"next": "https://evil.example/"}
    )
    assert response["Location"] == f"/dashboard/alerts/{alert.id}/"


def test_it_answers_404_for_an_unknown_alert(sam):
    assert sam.get("/dashboard/alerts/999/").status_code == 404
    assert sam.post("/dashboard/alerts/999/acknowledge").status_code == 404
