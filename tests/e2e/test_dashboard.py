"""The dashboard in a browser, against one served app for the module: logging in, the overview's
tiles, traffic and the switch reaching open pages live, who may flip the switch, anonymous
visitors, and a lead's page showing a new text as it arrives."""

import re
import time

import pytest

from leads.models import Message
from monitoring.models import CacheSwitch, SwitchAudit
from tests.e2e.support import (
    PASSWORD,
    SHOWN_WITHIN_MS,
    expect,
    make_user,
    serving,
    sms_sid,
    wait_live,
)
from tests.factories import make_org

pytestmark = pytest.mark.django_db(transaction=True)

TILES = ["database", "redis", "switch", "breaker", "channel-layer", "evaluator"]
CHARTS = ["hit-rate", "request-rate", "latency", "error-rate", "redis-latency", "redis-memory"]
# The contract: a flip reaches every open page within a second.
SWITCH_PROPAGATION_SECONDS = 1.0
REASON_OFF = "Rollback: cache suspected of serving stale call contexts"
REASON_ON = "Fix deployed; caching back on"
# Notes, in every document of the page, when it shows which switch state (state|badge|generation).
SWITCH_WATCH = """(() => {
  const seen = (window.e2eSwitchSeen = []);
  const text = (id) => {
    const el = document.querySelector('[data-testid="' + id + '"]');
    return el ? el.textContent.trim() : "";
  };
  const note = () => {
    const shown = [text("switch-state"), text("switch-badge"), text("switch-generation")].join("|");
    if (!seen.length || seen[seen.length - 1].shown !== shown) {
      seen.push({ shown: shown, at: Date.now() });
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    note();
    new MutationObserver(note).observe(document.body, {
      subtree: true, childList: true, characterData: true,
    });
  });
})();"""
WEBSOCKET_OUTCOME = """(path) => new Promise((resolve) => {
  const ws = new WebSocket("ws://" + location.host + path);
  let opened = false;
  ws.onopen = () => { opened = true; ws.close(1000); };
  ws.onclose = (event) => resolve({opened: opened, code: event.code});
  setTimeout(() => resolve({opened: opened, code: null}), 10000);
})"""


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory, django_db_setup, django_db_blocker):
    with serving(tmp_path_factory.mktemp("served"), django_db_blocker) as served:
        yield served


@pytest.fixture(autouse=True)
def empty_cache(server):
    """The database is emptied after every test; the served app's private Redis must forget
    what it cached from it too (ids and generations start again)."""
    server.cache_redis.client().flushall()


def test_it_shows_a_staff_user_every_tile_after_logging_in(server, browse):
    make_user("olivia", password=PASSWORD)
    page = browse(server)
    page.goto("/dashboard/")
    expect(page).to_have_url(server.url + "/accounts/login/?next=/dashboard/")
    page.locator("#id_username").fill("olivia")
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()

    expect(page).to_have_url(server.url + "/dashboard/")
    expect(page.get_by_test_id("nav")).to_be_visible()
    expect(page.get_by_test_id("current-user")).to_have_text("olivia")
    for name in TILES:
        tile = page.get_by_test_id(f"tile-{name}")
        expect(tile).to_be_visible()
        expect(tile).to_have_attribute("data-status", re.compile(r"^(pass|warn|fail)$"))
    for name in ["database", "redis", "switch", "breaker", "channel-layer"]:
        expect(page.get_by_test_id(f"tile-{name}")).to_have_attribute("data-status", "pass")
    expect(page.get_by_test_id("switch-badge")).to_have_text("caching on")
    expect(page.get_by_test_id("switch-state")).to_have_text("ON")
    for name in CHARTS:
        expect(page.get_by_test_id(f"chart-{name}")).to_be_visible()
    expect(page.get_by_test_id("no-active-alerts")).to_be_visible()
    wait_live(page)
    expect(page.get_by_test_id("live-status")).to_have_text("live")
    expect(page.get_by_test_id("live-degraded")).to_be_hidden()


def test_it_shows_new_traffic_without_a_reload(server, browse):
    make_org()
    page = browse(server, make_user("olivia"))
    page.goto("/dashboard/")
    wait_live(page)
    page.evaluate("window.e2eLoaded = 'once'")
    sms_chart = page.get_by_test_id("chart-latency-webhook-sms")
    expect(sms_chart).to_have_count(0)
    before = page.get_by_test_id("chart-request-rate-latest").text_content()
    assert before == "—" or float(before.removesuffix(" req/s")) < 0.5, before

    for n in range(30):
        assert server.post_sms(sms_sid(n), f"Text number {n}") == 200

    # 30 texts in the last minute: at least 0.5 requests a second, and a latency chart of
    # their own, drawn from the evaluator's pushed snapshots (or the page's own polling).
    expect(sms_chart).to_be_visible(timeout=SHOWN_WITHIN_MS)
    page.wait_for_function(
        "() => parseFloat(document.querySelector("
        "'[data-testid=\"chart-request-rate-latest\"]').textContent) >= 0.5",
        timeout=SHOWN_WITHIN_MS,
    )
    expect(page.get_by_test_id("chart-request-rate-latest")).to_have_text(
        re.compile(r"^\d+\.\d\d req/s$")
    )
    newest = page.get_by_test_id("chart-request-rate-table").locator("tbody tr td").first
    assert float(newest.text_content().removesuffix(" req/s")) >= 0.5
    assert page.evaluate("window.e2eLoaded") == "once", "the page was reloaded"


def test_it_flips_the_switch_on_every_open_page_within_a_second(server, browse):
    page = browse(server, make_user("olivia", may_flip=True))
    other = browse(server, make_user("sam"))
    for each in (page, other):
        each.context.add_init_script(SWITCH_WATCH)
        each.goto("/dashboard/")
        expect(each.get_by_test_id("switch-state")).to_have_text("ON")
        wait_live(each)
    generation = int(page.get_by_test_id("switch-generation").text_content())

    page.get_by_test_id("switch-off-button").click()
    expect(page.get_by_test_id("switch-off-dialog")).to_be_visible()
    page.get_by_test_id("switch-off-reason").fill(REASON_OFF)
    clicked = time.time()
    page.get_by_test_id("switch-off-confirm").click()
    # This page shows the form's answer; the other one gets the websocket's push.
    for each in (page, other):
        expect(each.get_by_test_id("switch-state")).to_have_text("OFF", timeout=SHOWN_WITHIN_MS)
        assert_shown_within_a_second(each, f"OFF|caching off|{generation}", clicked)
        expect(each.get_by_test_id("switch-reason")).to_have_text(REASON_OFF)
        expect(each.get_by_test_id("switch-changed-by")).to_have_text("olivia")
    audit = SwitchAudit.objects.get()
    assert (audit.actor, audit.action, audit.source, audit.reason) == (
        "olivia",
        SwitchAudit.Action.DISABLE,
        "dashboard",
        REASON_OFF,
    )
    assert (audit.old_enabled, audit.new_enabled, audit.generation) == (True, False, generation)

    expect(page.get_by_test_id("flash-success")).to_contain_text("Caching is now off")
    page.get_by_test_id("switch-on-button").click()
    page.get_by_test_id("switch-on-reason").fill(REASON_ON)
    clicked = time.time()
    page.get_by_test_id("switch-on-confirm").click()
    for each in (page, other):
        expect(each.get_by_test_id("switch-generation")).to_have_text(
            str(generation + 1), timeout=SHOWN_WITHIN_MS
        )
        assert_shown_within_a_second(each, f"ON|caching on|{generation + 1}", clicked)
        expect(each.get_by_test_id("switch-reason")).to_have_text(REASON_ON)
    assert list(SwitchAudit.objects.order_by("id").values_list("action", "generation")) == [
        (SwitchAudit.Action.DISABLE, generation),
        (SwitchAudit.Action.ENABLE, generation + 1),
    ]


def assert_shown_within_a_second(page, shown: str, clicked: float) -> None:
    """The page showed `shown` (state|badge|generation) within a second of the click, by the
    page's own clock (the machine's), so a slow test process cannot blur the measure."""
    at = page.evaluate(
        "([shown, since]) => (window.e2eSwitchSeen.find("
        "(seen) => seen.shown === shown && seen.at >= since) || {}).at",
        [shown, clicked * 1000],
    )
    assert at is not None, f"{page.url} never showed {shown}"
    took = at / 1000 - clicked
    assert took < SWITCH_PROPAGATION_SECONDS, f"{page.url} showed {shown} after {took:.3f} s"


def test_it_shows_no_button_to_staff_without_the_permission_and_refuses_a_forged_post(
    server, browse
):
    page = browse(server, make_user("sam"))
    page.goto("/dashboard/")
    expect(page.get_by_test_id("switch-no-permission")).to_be_visible()
    expect(page.get_by_test_id("switch-state")).to_have_text("ON")
    for name in ["switch-off-button", "switch-on-button", "flush-button", "switch-off-dialog"]:
        expect(page.get_by_test_id(name)).to_have_count(0)

    # The request the missing button would have sent, with the page's valid CSRF token: the
    # answer is the permission's 403 (the app's page), not a CSRF failure.
    token = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    forged = [
        ("/dashboard/switch/flip", {"enabled": "off", "reason": "forged"}),
        ("/dashboard/cache/flush", {"reason": "forged"}),
    ]
    for path, form in forged:
        response = page.request.post(path, form={**form, "csrfmiddlewaretoken": token})
        assert response.status == 403, path
        assert 'data-testid="forbidden"' in response.text()
    assert not SwitchAudit.objects.exists()
    assert (CacheSwitch.objects.get().enabled, CacheSwitch.objects.get().generation) == (True, 1)
    page.reload()
    expect(page.get_by_test_id("switch-state")).to_have_text("ON")


def test_it_sends_anonymous_users_to_the_login_page_and_refuses_their_websocket(server, browse):
    page = browse(server)
    for path in ["/dashboard/", "/dashboard/alerts/", "/dashboard/switch/", "/dashboard/leads/"]:
        page.goto(path)
        expect(page).to_have_url(f"{server.url}/accounts/login/?next={path}")
        expect(page.get_by_test_id("login-submit")).to_be_visible()
    expect(page.get_by_test_id("live-status")).to_have_count(0)
    refused = page.evaluate(WEBSOCKET_OUTCOME, "/ws/monitoring/")
    assert refused["opened"] is False, refused
    assert refused["code"] is not None, "the socket neither opened nor closed"

    # The same socket from a staff member's page opens: the refusal was about who asked.
    staff = browse(server, make_user("olivia"))
    staff.goto("/dashboard/")
    assert staff.evaluate(WEBSOCKET_OUTCOME, "/ws/monitoring/") == {"opened": True, "code": 1000}


def test_it_shows_a_new_text_on_the_open_lead_page(server, browse):
    make_org()
    assert server.post_sms(sms_sid(1), "Do you have e-bikes in stock?") == 200
    first = Message.objects.get()
    page = browse(server, make_user("olivia"))
    page.goto(f"/dashboard/leads/{first.conversation.lead_id}/")
    messages = page.get_by_test_id("timeline").locator("[data-role]")
    expect(messages).to_have_count(1)
    expect(page.get_by_test_id(f"message-{first.id}")).to_contain_text("e-bikes in stock")
    wait_live(page)
    page.evaluate("window.e2eLoaded = 'once'")

    assert server.post_sms(sms_sid(2), "Can I book a test ride on Saturday?") == 200
    second = Message.objects.exclude(pk=first.pk).get()
    shown = page.get_by_test_id(f"message-{second.id}")
    expect(shown).to_contain_text("Can I book a test ride on Saturday?", timeout=SHOWN_WITHIN_MS)
    expect(shown).to_have_attribute("data-role", Message.Role.CUSTOMER)
    expect(shown).to_have_class(re.compile(r"\bmsg--new\b"))
    expect(messages).to_have_count(2)
    assert page.evaluate("window.e2eLoaded") == "once", "the page was reloaded"
