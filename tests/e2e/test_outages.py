"""The overview through outages, each against a served app of its own: the cache Redis going
down and coming back (tile, alert, resolution, all live), and the channel layer's Redis going
down (the page says it is degraded and keeps itself current by polling)."""

import re

import pytest
from django.test import override_settings

from monitoring.cache import switch
from monitoring.models import Alert
from tests.e2e.support import (
    SHOWN_WITHIN_MS,
    active_alerts,
    degraded_banner,
    expect,
    health_tile,
    last_change_by,
    live_status,
    private_redis,
    serving,
    switch_badge,
    switch_fact,
    switch_state,
    wait_live,
)
from tests.personas import viewer

pytestmark = pytest.mark.django_db(transaction=True)

# A dead websocket is noticed by its next ping (every 10 s) going unanswered (5 s more).
DEGRADED_WITHIN_MS = 30_000
# While degraded the page polls the switch every second.
POLLED_WITHIN_MS = 5_000


@pytest.fixture
def server(browser, tmp_path_factory, django_db_blocker):
    with serving(tmp_path_factory.mktemp("served"), django_db_blocker) as served:
        yield served


@pytest.fixture
def layer_redis():
    server = private_redis()
    yield server
    server.close()


@pytest.fixture
def server_with_redis_layer(browser, tmp_path_factory, django_db_blocker, layer_redis):
    """Served with a channels_redis layer on a redis-server of its own (the test stops it)."""
    log_dir = tmp_path_factory.mktemp("served")
    with serving(log_dir, django_db_blocker, CHANNEL_REDIS_URL=layer_redis.url) as served:
        yield served


def test_it_shows_a_redis_outage_and_its_end_live(server, browse):
    page = browse(server, viewer("olivia"))
    page.goto("/dashboard/")
    tile = health_tile(page, "Redis")
    expect(tile).to_have_attribute("data-status", "pass")
    wait_live(page)
    alerts = active_alerts(page)
    lost = alerts.locator("li", has_text="Redis connection lost")
    expect(lost).to_have_count(0)

    server.cache_redis.stop()
    # Redis down while caching is on: the health check says "warn" (the app still answers from
    # the database), and the page shows the incident red.
    expect(tile).to_have_attribute("data-status", "fail", timeout=SHOWN_WITHIN_MS)
    expect(tile).to_have_class(re.compile(r"\btile--fail\b"))
    expect(tile).to_contain_text("unreachable")
    expect(lost).to_have_count(1, timeout=SHOWN_WITHIN_MS)
    alert = Alert.objects.get(rule="redis_connection_lost")
    # The row is this alert's: its rule links to the alert's page.
    expect(lost.get_by_role("link", name="redis_connection_lost")).to_have_attribute(
        "href", f"/dashboard/alerts/{alert.id}/"
    )
    expect(lost).to_have_class(re.compile(r"\balert-row--critical\b"))
    state = lost.get_by_text(re.compile(r"^(pending|firing)$"))
    expect(state).to_have_text("firing", timeout=SHOWN_WITHIN_MS)
    expect(page.get_by_text("No active alerts.")).to_be_hidden()

    server.cache_redis.start()  # on the same port
    # Its row (named by its rule's link) goes: one open alert per rule.
    row = alerts.get_by_role("listitem", name="redis_connection_lost", exact=True)
    expect(row).to_have_count(0, timeout=SHOWN_WITHIN_MS)
    expect(tile).to_have_attribute("data-status", "pass", timeout=SHOWN_WITHIN_MS)
    alert.refresh_from_db()
    assert alert.state == Alert.State.RESOLVED
    expect(page.locator("body")).to_have_attribute("data-live-state", "live")


def test_it_polls_while_the_channel_layer_is_down(server_with_redis_layer, layer_redis, browse):
    server = server_with_redis_layer
    page = browse(server, viewer("olivia"))
    page.goto("/dashboard/")
    expect(health_tile(page, "Channel layer")).to_have_attribute("data-status", "pass")
    wait_live(page)
    page.evaluate("window.e2eLoaded = 'once'")
    banner = degraded_banner(page)
    expect(banner).to_be_hidden()

    layer_redis.stop()
    expect(banner).to_be_visible(timeout=DEGRADED_WITHIN_MS)
    expect(banner).to_contain_text("live updates degraded")
    expect(page.locator("body")).to_have_attribute("data-live-state", "degraded")
    expect(live_status(page)).to_have_text("degraded")
    expect(health_tile(page, "Channel layer")).to_have_attribute(
        "data-status", "warn", timeout=SHOWN_WITHIN_MS
    )

    # A flip made elsewhere (here: the service the CLI calls) reaches the page by polling.
    with override_settings(REDIS_URL=server.cache_redis.url, REDIS_ENABLED=None):
        switch.set_caching(False, actor="oncall", reason="layer outage drill", source="cli")
    expect(switch_state(page)).to_have_text("OFF", timeout=POLLED_WITHIN_MS)
    expect(switch_badge(page)).to_have_text("caching off")
    expect(switch_fact(page, "Last change")).to_have_text(last_change_by("oncall"))
    expect(banner).to_be_visible()

    layer_redis.start()  # on the same port: the page reconnects by itself
    expect(banner).to_be_hidden(timeout=DEGRADED_WITHIN_MS)
    expect(page.locator("body")).to_have_attribute("data-live-state", "live")
    assert page.evaluate("window.e2eLoaded") == "once", "the page was reloaded"
