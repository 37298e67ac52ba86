"""The regions of the overview the pages' script fetches again when an event says they changed
(/dashboard/fragments/<name>): each is the full page's own partial, served alone to whoever may
see the page, never cached, in a fixed number of queries."""

import re

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from monitoring.cache import switch
from monitoring.models import Alert
from tests.monitoring.dashboard_support import (
    PINNED,
    TILES,
    page,
)
from tests.personas import plain_user, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_configured")]

FRAGMENTS = ["health", "switch", "switch-badge", "alerts", "rollback-banner"]
# Each fragment's queries: the session and the user (2), then what it shows.
QUERIES = {
    # the database check, the switch (its row), the evaluator's lease, the overdue notifications
    # (with no channel configured, no per-channel query)
    "health": 2 + 4,
    # the switch row; the permission check (the user's and their groups' permissions)
    "switch": 2 + 1 + 2,
    "switch-badge": 2 + 1,
    # the open alerts; the silences in force or to come
    "alerts": 2 + 1 + 1,
    # the switch row; the permission check
    "rollback-banner": 2 + 1 + 2,
}
CSRF_INPUT = re.compile(r'<input type="hidden" name="csrfmiddlewaretoken" value="[^"]*">')
# What two renders of the same state may differ in: the masked CSRF token, and the database's
# latency as the health check measured it.
VARYING = [(CSRF_INPUT, ""), (re.compile(r"\d+(\.\d+)? ms"), "N ms")]


def fragment(client, name: str):
    return client.get(f"/dashboard/fragments/{name}")


def make_firing_alert(rule: str = "hit_rate_critical") -> Alert:
    now = timezone.now()
    return Alert.objects.create(
        rule=rule,
        severity="critical",
        state="firing",
        summary="Cache hit rate below 30 %",
        value=0.2,
        threshold=0.3,
        started_at=now,
        fired_at=now,
    )


# --- who gets them, and how ---------------------------------------------------------------


@pytest.mark.parametrize("name", FRAGMENTS)
def test_it_sends_anonymous_visitors_to_the_login_page_like_the_page(name):
    response = fragment(Client(), name)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/dashboard/fragments/{name}"


@pytest.mark.parametrize("name", FRAGMENTS)
def test_it_forbids_logged_in_users_who_are_not_staff(name):
    mark = signed_in(plain_user("mark"))
    response = fragment(mark, name)
    assert response.status_code == 403
    assert 'data-fragment="' not in response.content.decode()


@pytest.mark.parametrize("name", FRAGMENTS)
def test_it_serves_each_fragment_uncached_in_a_fixed_number_of_queries(
    sam, name, django_assert_num_queries
):
    switch.read_state()  # the switch row exists, as on every install past its first request
    with django_assert_num_queries(QUERIES[name]):
        response = fragment(sam, name)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert "no-store" in response["Cache-Control"].split(", ")
    html = response.content.decode().strip()
    assert html.startswith("<") and f'data-fragment="{name}"' in html.split(">", 1)[0]
    assert "<html" not in html


def test_it_answers_404_for_a_fragment_it_does_not_have(sam):
    assert fragment(sam, "tiles").status_code == 404


@pytest.mark.parametrize("name", FRAGMENTS)
def test_it_answers_405_to_anything_but_a_get(sam, name):
    assert sam.post(f"/dashboard/fragments/{name}").status_code == 405


@pytest.mark.parametrize("name", FRAGMENTS)
def test_it_serves_the_region_exactly_as_the_full_page_renders_it(olivia, name):
    make_firing_alert()
    whole = steady(olivia.get("/dashboard/").content.decode())
    alone = steady(fragment(olivia, name).content.decode()).strip()
    assert alone in whole


def steady(html: str) -> str:
    for pattern, replacement in VARYING:
        html = pattern.sub(replacement, html)
    return html


# --- what they say ------------------------------------------------------------------------


def test_it_renders_the_switch_panel_with_the_switchs_labels(sam):
    switch.set_caching(False, actor="ops-cli", reason="p99 doubled", source="cli")
    panel = page(fragment(sam, "switch"))
    assert panel.text("switch-state") == "OFF"
    assert panel.text("switch-source") == "runtime switch"
    assert panel.text("switch-generation") == "1"
    assert panel.text("switch-changed-by") == "ops-cli"
    assert panel.text("switch-reason") == "p99 doubled"
    assert "switch-no-permission" in panel
    assert panel.ids("switch-off") == panel.ids("switch-on") == []


def test_it_offers_the_switchs_buttons_in_the_panel_to_a_user_with_the_permission(olivia):
    panel = page(fragment(olivia, "switch"))
    assert "hidden" not in panel.attrs("switch-off-button")
    assert "hidden" in panel.attrs("switch-on-button")
    assert panel.attrs("switch-off-form")["action"] == "/dashboard/switch/flip"
    assert "switch-no-permission" not in panel


def test_it_says_in_the_panel_and_the_badge_when_the_environment_pins_caching_off(olivia):
    with override_settings(REDIS_ENABLED=False):
        panel = page(fragment(olivia, "switch"))
        badge = page(fragment(olivia, "switch-badge"))
    assert panel.text("switch-source") == "pinned off by the environment (REDIS_ENABLED=false)"
    assert panel.text("switch-unavailable") == (
        f"Disabled: {PINNED}. Change the environment and restart to use the switch."
    )
    assert badge.text("switch-badge") == "caching pinned off"


def test_it_renders_the_badge_from_the_stored_switch(sam):
    assert page(fragment(sam, "switch-badge")).text("switch-badge") == "caching on"
    switch.set_caching(False, actor="ops-cli", reason="p99 doubled", source="cli")
    assert page(fragment(sam, "switch-badge")).text("switch-badge") == "caching off"


def test_it_renders_every_health_tile_with_its_status(sam):
    health = page(fragment(sam, "health"))
    assert [f"tile-{name}" in health for name in TILES] == [True] * len(TILES)
    assert health.text("health-status") == "warn"
    assert health.attrs("tile-redis")["data-status"] == "fail"
    assert health.attrs("tile-redis")["data-connected"] == "false"
    assert health.text("tile-redis-detail").startswith("unreachable: ")
    assert health.text("tile-switch-detail") == "caching on · runtime · generation 1"
    assert health.text("tile-channel-layer-detail") == "InMemoryChannelLayer"


def test_it_renders_the_active_alerts_with_buttons_that_return_to_the_overview(sam):
    firing = make_firing_alert()
    Alert.objects.create(
        rule="redis_memory_warning",
        severity="warning",
        state="resolved",
        summary="resolved long ago",
        value=0.5,
        threshold=0.8,
        started_at=timezone.now(),
        resolved_at=timezone.now(),
    )
    response = fragment(sam, "alerts")
    alerts = page(response)
    assert alerts.ids("alert-ack-") == [f"alert-ack-{firing.id}"]
    assert alerts.text("active-alert-count") == "1"
    assert alerts.text(f"alert-{firing.id}").startswith(
        "critical hit_rate_critical firing Cache hit rate below 30 %"
    )
    assert "hidden" in alerts.attrs("no-active-alerts")
    assert '<input type="hidden" name="next" value="/dashboard/">' in response.content.decode()


def test_it_says_so_when_no_alert_is_active(sam):
    alerts = page(fragment(sam, "alerts"))
    assert alerts.text("active-alert-count") == "0"
    assert "hidden" not in alerts.attrs("no-active-alerts")
    assert alerts.text("no-active-alerts") == "No active alerts."
