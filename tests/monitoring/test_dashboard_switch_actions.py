"""The dashboard's flip and flush: what each writes and tells the open dashboards, and what
every refusal (no permission, no reason, no CSRF token, pinned by the environment) leaves
unwritten."""

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import Client, override_settings

from monitoring import events
from monitoring.cache import switch
from monitoring.models import (
    SwitchAudit,
)
from tests.monitoring.dashboard_support import CANNOT_FLIP, PINNED, flash, page
from tests.personas import flipper, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_configured")]


# --- flipping the switch --------------------------------------------------------------------


def test_it_turns_caching_off_through_the_service_and_audits_it(olivia):
    response = olivia.post("/dashboard/switch/flip", {"enabled": "off", "reason": "p99 doubled"})

    assert (response.status_code, response["Location"]) == (302, "/dashboard/#switch")
    audit = SwitchAudit.objects.get()
    assert (audit.actor, audit.action, audit.source, audit.reason) == (
        "olivia",
        "disable",
        "dashboard",
        "p99 doubled",
    )
    assert (audit.old_enabled, audit.new_enabled, audit.generation) == (True, False, 1)
    assert switch.read_state().enabled is False


def test_it_bumps_the_generation_when_turning_caching_back_on(olivia):
    olivia.post(
        "/dashboard/switch/flip", {"enabled": "off", "reason": "Redis upgrade"}, follow=True
    )
    response = olivia.post(
        "/dashboard/switch/flip", {"enabled": "on", "reason": "upgrade done"}, follow=True
    )

    assert flash(response) == ["Caching is now on (generation 2)."]
    assert list(SwitchAudit.objects.order_by("id").values_list("action", "generation")) == [
        ("disable", 1),
        ("enable", 2),
    ]
    assert page(response).text("switch-generation") == "2"


def test_it_tells_every_open_dashboard_about_a_flip(olivia, django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.DASHBOARD_GROUP, channel)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            olivia.post("/dashboard/switch/flip", {"enabled": "off", "reason": "incident 7"})
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)(events.DASHBOARD_GROUP, channel)
    assert (message["type"], message["event"]) == ("dashboard.event", "switch.changed")
    payload = message["payload"]
    assert (payload["action"], payload["enabled"], payload["changed_by"], payload["reason"]) == (
        "disable",
        False,
        "olivia",
        "incident 7",
    )


def test_it_forbids_a_flip_to_staff_without_the_permission(sam):
    response = sam.post("/dashboard/switch/flip", {"enabled": "off", "reason": "curious"})
    assert response.status_code == 403
    assert SwitchAudit.objects.count() == 0
    assert switch.read_state().enabled is True


def test_it_sends_an_anonymous_flip_to_the_login_page():
    response = Client().post("/dashboard/switch/flip", {"enabled": "off", "reason": "x"})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert SwitchAudit.objects.count() == 0


@pytest.mark.parametrize("reason", ["", "   "])
def test_it_refuses_a_flip_without_a_reason(olivia, reason):
    response = olivia.post(
        "/dashboard/switch/flip", {"enabled": "off", "reason": reason}, follow=True
    )
    assert flash(response) == ["Nothing changed. A reason is required: say why, for the audit log."]
    assert SwitchAudit.objects.count() == 0
    assert switch.read_state().enabled is True


def test_it_refuses_a_forged_flip_without_the_csrf_token():
    client = signed_in(flipper("olivia"), enforce_csrf_checks=True)
    response = client.post("/dashboard/switch/flip", {"enabled": "off", "reason": "forged"})
    assert response.status_code == 403
    assert SwitchAudit.objects.count() == 0


def test_it_accepts_a_flip_that_carries_the_csrf_token():
    client = signed_in(flipper("olivia"), enforce_csrf_checks=True)
    assert client.get("/dashboard/").status_code == 200  # the page's forms set the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/dashboard/switch/flip",
        {"enabled": "off", "reason": "real", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert SwitchAudit.objects.get().reason == "real"


def test_it_answers_405_to_a_get_of_an_action(olivia):
    assert olivia.get("/dashboard/switch/flip").status_code == 405
    assert olivia.get("/dashboard/cache/flush").status_code == 405


@pytest.mark.parametrize(("overrides", "why"), CANNOT_FLIP)
def test_it_refuses_a_flip_the_environment_does_not_allow(olivia, overrides, why):
    with override_settings(**overrides):
        response = olivia.post(
            "/dashboard/switch/flip", {"enabled": "on", "reason": "try"}, follow=True
        )
    assert flash(response) == [f"The switch cannot be flipped: {why}."]
    assert SwitchAudit.objects.count() == 0


# --- flushing the cache ---------------------------------------------------------------------


def test_it_flushes_the_cache_by_bumping_the_generation(olivia):
    response = olivia.post("/dashboard/cache/flush", {"reason": "bad prices cached"}, follow=True)

    assert flash(response) == ["Cache flushed: now generation 2."]
    audit = SwitchAudit.objects.get()
    assert (audit.actor, audit.action, audit.source, audit.reason, audit.generation) == (
        "olivia",
        "flush",
        "dashboard",
        "bad prices cached",
        2,
    )
    state = switch.read_state()
    assert (state.enabled, state.generation) == (True, 2)


def test_it_forbids_a_flush_to_staff_without_the_permission(sam):
    assert sam.post("/dashboard/cache/flush", {"reason": "curious"}).status_code == 403
    assert switch.read_state().generation == 1


def test_it_refuses_a_forged_flush_without_the_csrf_token():
    client = signed_in(flipper("olivia"), enforce_csrf_checks=True)
    assert client.post("/dashboard/cache/flush", {"reason": "forged"}).status_code == 403
    assert switch.read_state().generation == 1


def test_it_refuses_a_flush_without_a_reason(olivia):
    response = olivia.post("/dashboard/cache/flush", {"reason": " "}, follow=True)
    assert flash(response) == ["Nothing flushed. A reason is required: say why, for the audit log."]
    assert switch.read_state().generation == 1


def test_it_refuses_a_flush_while_the_environment_pins_caching_off(olivia):
    with override_settings(REDIS_ENABLED=False):
        response = olivia.post("/dashboard/cache/flush", {"reason": "try"}, follow=True)
    assert flash(response) == [f"The cache cannot be flushed: {PINNED}."]
    assert SwitchAudit.objects.count() == 0
