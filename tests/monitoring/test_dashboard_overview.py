"""The ops dashboard's pages, as staff allowed to flip the switch (Olivia), as staff who may only
look (Sam), as a logged-in user who is not staff (Mark), and anonymously: who gets in, the
health tiles, the switch panel with or without its buttons, and the switch's history."""

import pytest
from django.test import Client, override_settings

from monitoring.cache import gate, switch
from monitoring.models import (
    CacheSwitch,
    SwitchAudit,
)
from tests.monitoring.dashboard_support import CANNOT_FLIP, PAGES, TILES, page
from tests.personas import flipper

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_configured")]


# --- who gets in ----------------------------------------------------------------------------


def test_it_redirects_the_site_root_to_the_dashboard(olivia):
    response = olivia.get("/")
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")


@pytest.mark.parametrize("path", PAGES)
def test_it_sends_anonymous_visitors_to_the_login_page(path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.parametrize("path", PAGES)
def test_it_forbids_logged_in_users_who_are_not_staff(mark, path):
    assert mark.get(path).status_code == 403


def test_it_serves_a_login_page_that_leads_back_to_the_dashboard():
    flipper("olivia", password="pw")
    client = Client()
    assert "login-form" in page(client.get("/accounts/login/?next=/dashboard/"))
    response = client.post(
        "/accounts/login/", {"username": "olivia", "password": "pw", "next": "/dashboard/"}
    )
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")
    assert client.get("/dashboard/").status_code == 200


# --- the overview ---------------------------------------------------------------------------


def test_it_renders_every_health_tile_with_its_status(sam):
    overview = page(sam.get("/dashboard/"))
    assert [f"tile-{name}" in overview for name in TILES] == [True] * len(TILES)
    assert overview.attrs("tile-database")["data-status"] == "pass"
    assert overview.text("tile-database-status") == "pass"
    # Caching is on and its Redis does not answer: every read still comes from the database
    # (the deployment's health is "warn"), but the tile shows the incident red.
    assert overview.attrs("tile-redis")["data-status"] == "fail"
    assert overview.text("tile-redis-detail").startswith("unreachable: ")
    assert overview.attrs("tile-breaker")["class"] == "tile tile--pass"
    assert overview.text("tile-channel-layer-detail") == "InMemoryChannelLayer"
    assert overview.text("tile-evaluator-detail") == "no evaluator holds the lease"
    assert overview.text("health-status") == "warn"


def test_it_shows_the_switch_with_its_source_generation_and_last_change(sam):
    switch.set_caching(False, actor="ops-cli", reason="p99 doubled", source="cli")
    overview = page(sam.get("/dashboard/"))
    assert overview.text("switch-state") == "OFF"
    assert overview.text("switch-source") == "runtime switch"
    assert overview.text("switch-generation") == "1"
    assert overview.text("switch-changed-by") == "ops-cli"
    assert overview.text("switch-reason") == "p99 doubled"
    changed_at = CacheSwitch.objects.get().changed_at
    assert overview.attrs("switch-changed-at")["datetime"] == changed_at.isoformat()
    assert overview.text("switch-badge") == "caching off"


def test_it_offers_the_switch_and_the_flush_to_a_user_with_the_permission(olivia):
    overview = page(olivia.get("/dashboard/"))
    assert "hidden" not in overview.attrs("switch-off-button")
    assert "hidden" in overview.attrs("switch-on-button")
    assert "disabled" not in overview.attrs("flush-button")
    assert overview.attrs("switch-off-button")["commandfor"] == "switch-off-dialog"
    assert overview.attrs("switch-off-form")["action"] == "/dashboard/switch/flip"
    assert overview.attrs("flush-form")["action"] == "/dashboard/cache/flush"
    assert "required" in overview.attrs("switch-off-reason")
    assert "switch-no-permission" not in overview


def test_it_shows_the_state_but_no_button_without_the_permission(sam):
    overview = page(sam.get("/dashboard/"))
    assert overview.text("switch-state") == "ON"
    assert "switch-no-permission" in overview
    assert overview.ids("switch-off") == overview.ids("switch-on") == []
    assert overview.ids("flush") == []


@pytest.mark.parametrize(("overrides", "why"), CANNOT_FLIP)
def test_it_disables_the_buttons_with_an_explanation_when_the_switch_cannot_flip(
    olivia, overrides, why
):
    with override_settings(**overrides):
        overview = page(olivia.get("/dashboard/"))
    assert "disabled" in overview.attrs("switch-on-button")
    assert "disabled" in overview.attrs("flush-button")
    assert overview.text("switch-unavailable") == (
        f"Disabled: {why}. Change the environment and restart to use the switch."
    )
    assert overview.ids("switch-on-form") == overview.ids("flush-form") == []


# --- switch history -------------------------------------------------------------------------


def test_it_lists_the_switch_audit_log_newest_first(sam):
    switch.set_caching(False, actor="alice (cli)", reason="Redis upgrade", source="cli")
    switch.set_caching(True, actor="bob", reason="upgrade done", source="admin")
    gate.flush(actor="carol", reason="bad data cached", source="dashboard")
    audits = list(SwitchAudit.objects.order_by("id"))

    history = page(sam.get("/dashboard/switch/"))

    assert history.ids("audit-") == [
        testid
        for audit in reversed(audits)
        for testid in (f"audit-{audit.id}", f"audit-{audit.id}-actor", f"audit-{audit.id}-reason")
    ]
    newest = audits[-1]
    assert history.text(f"audit-{newest.id}-actor") == "carol"
    assert history.text(f"audit-{newest.id}-reason") == "bad data cached"
    assert history.attrs(f"audit-{newest.id}")["data-action"] == "flush"
    assert history.attrs(f"audit-{audits[0].id}")["data-source"] == "cli"


def test_it_says_so_when_the_switch_never_changed(sam):
    assert "switch-audit-empty" in page(sam.get("/dashboard/switch/"))
