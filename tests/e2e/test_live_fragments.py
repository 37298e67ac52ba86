"""Changes made elsewhere reaching an open overview without a reload, as the server renders
them: a switch flipped in another person's session (the admin) and in another process (here
the test's own, sharing the served app's channel layer, as several served processes do), and an
alert transition adding its row."""

import re
from contextlib import contextmanager

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from monitoring import events
from monitoring.alerts import engine
from monitoring.alerts.evaluator import transition_event
from monitoring.alerts.rules import Rule
from monitoring.cache import controls
from monitoring.models import Alert, SwitchAudit
from tests.e2e.support import (
    SHOWN_WITHIN_MS,
    active_alerts,
    expect,
    health_tile,
    last_change_by,
    private_redis,
    serving,
    switch_badge,
    switch_fact,
    switch_state,
    wait_live,
)
from tests.personas import superuser, viewer

pytestmark = pytest.mark.django_db(transaction=True)

# A rule of the test's own: the served app's evaluator judges only its own rules.
DRILL = Rule(
    name="e2e_drill",
    severity="critical",
    summary="Drill: error rate above {threshold:.0%}",
    measure=lambda sample: None,
    threshold=0.05,
    above=True,
    clear=0.04,
    for_seconds=0,
)


@pytest.fixture(scope="module")
def layer_redis():
    server = private_redis()
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory, django_db_setup, django_db_blocker, layer_redis):
    """Served with a channels_redis layer the test process can publish to."""
    log_dir = tmp_path_factory.mktemp("served")
    with serving(log_dir, django_db_blocker, CHANNEL_REDIS_URL=layer_redis.url) as served:
        yield served


@pytest.fixture(autouse=True)
def empty_cache(server):
    server.cache_redis.client().flushall()


@contextmanager
def as_another_process(server, layer_redis):
    """This process configured as one more served process: the same cache Redis and channel
    layer; what it publishes is handed over before the block ends."""
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [layer_redis.url]},
        }
    }
    with override_settings(
        REDIS_URL=server.cache_redis.url, REDIS_ENABLED=None, CHANNEL_LAYERS=layers
    ):
        yield
        assert events.publisher.drain(), "the events were not handed to the channel layer"


def open_overview(server, browse, user):
    page = browse(server, user)
    page.goto("/dashboard/")
    wait_live(page)
    page.evaluate("window.e2eLoaded = 'once'")
    return page


def test_it_shows_a_flip_made_in_the_admin_on_an_open_overview(server, browse):
    page = open_overview(server, browse, viewer("sam"))
    expect(switch_state(page)).to_have_text("ON")
    admin = browse(server, superuser("root"))
    admin.goto("/admin/monitoring/cacheswitch/1/change/")
    admin.get_by_label("Enabled").uncheck()
    admin.get_by_label("Reason").fill("Admin drill: caching off")
    admin.get_by_role("button", name="Save", exact=True).click()
    expect(admin.get_by_text("was changed successfully")).to_be_visible()

    expect(switch_state(page)).to_have_text("OFF", timeout=SHOWN_WITHIN_MS)
    expect(switch_fact(page, "Reason")).to_have_text("Admin drill: caching off")
    expect(switch_fact(page, "Last change")).to_have_text(last_change_by("root"))
    expect(switch_badge(page)).to_have_text("caching off")
    expect(health_tile(page, "Switch")).to_contain_text("caching off · runtime · generation 1")
    assert SwitchAudit.objects.get().source == "admin"
    assert page.evaluate("window.e2eLoaded") == "once", "the page was reloaded"


def test_it_shows_a_flip_from_another_process_on_an_open_overview(server, layer_redis, browse):
    page = open_overview(server, browse, viewer("sam"))
    expect(switch_fact(page, "Source")).to_have_text("runtime switch")
    expect(switch_state(page)).to_have_text("ON")

    with as_another_process(server, layer_redis):
        controls.flip(False, actor="oncall", reason="Drill from the CLI", source="cli")

    expect(switch_state(page)).to_have_text("OFF", timeout=SHOWN_WITHIN_MS)
    expect(switch_fact(page, "Reason")).to_have_text("Drill from the CLI")
    expect(switch_fact(page, "Last change")).to_have_text(last_change_by("oncall"))
    expect(switch_badge(page)).to_have_text("caching off")

    with as_another_process(server, layer_redis):
        controls.flip(True, actor="oncall", reason="Drill over", source="cli")
    expect(switch_state(page)).to_have_text("ON", timeout=SHOWN_WITHIN_MS)
    expect(switch_fact(page, "Generation")).to_have_text("2")
    expect(switch_badge(page)).to_have_text("caching on")
    assert page.evaluate("window.e2eLoaded") == "once", "the page was reloaded"


def test_it_adds_an_alerts_row_when_it_fires(server, layer_redis, browse):
    page = open_overview(server, browse, viewer("sam"))
    expect(page.get_by_text("No active alerts.")).to_be_visible()
    rows = active_alerts(page).get_by_role("listitem")
    expect(rows).to_have_count(0)

    with as_another_process(server, layer_redis):
        with transaction.atomic():
            transitions = engine.step(DRILL, 0.2, timezone.now())
        for transition in transitions:
            events.publish("alert.transition", transition_event(transition))
    alert = Alert.objects.get(rule="e2e_drill")
    assert [(t.from_state, t.to_state) for t in transitions] == [
        ("", "pending"),
        ("pending", "firing"),
    ]

    row = active_alerts(page).get_by_role("listitem", name="e2e_drill", exact=True)
    expect(row).to_have_count(1, timeout=SHOWN_WITHIN_MS)
    expect(row).to_contain_text("Drill: error rate above 5%")
    expect(row.get_by_text(re.compile(r"^(pending|firing)$"))).to_have_text("firing")
    expect(row.get_by_role("link", name="e2e_drill")).to_have_attribute(
        "href", f"/dashboard/alerts/{alert.id}/"
    )
    expect(rows).to_have_count(1)
    expect(page.get_by_text("No active alerts.")).to_be_hidden()
    expect(page.get_by_role("heading", name="Active alerts")).to_have_text("Active alerts 1")

    # Acknowledged from the swapped-in row: back on the overview, the row says who.
    row.get_by_label("Note").fill("looking")
    row.get_by_role("button", name="Acknowledge").click()
    expect(page).to_have_url(server.url + "/dashboard/")
    expect(row).to_contain_text("Acknowledged by sam")
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledgement_note) == ("sam", "looking")
