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
    chart,
    degraded_banner,
    expect,
    health_tile,
    last_change_by,
    live_status,
    serving,
    sms_sid,
    switch_badge,
    switch_fact,
    switch_state,
    wait_live,
)
from tests.factories import make_org
from tests.personas import flipper, viewer

pytestmark = pytest.mark.django_db(transaction=True)

TILES = ["Database", "Redis", "Switch", "Breaker", "Channel layer", "Evaluator"]
CHARTS = [
    "Cache hit rate",
    "Requests",
    "Latency p50 / p95, all requests",
    "Error rate (5xx)",
    "Redis latency",
    "Redis memory",
]
# The contract: a flip reaches every open page within a second.
SWITCH_PROPAGATION_SECONDS = 1.0
REASON_OFF = "Rollback: cache suspected of serving stale call contexts"
REASON_ON = "Fix deployed; caching back on"
# Notes, in every document of the page, when it shows which switch state (state|badge|generation).
SWITCH_WATCH = """(() => {
  const seen = (window.e2eSwitchSeen = []);
  const text = (selector) => {
    const el = document.querySelector(selector);
    return el ? el.textContent.trim() : "";
  };
  const fact = (term) => {
    const dt = [...document.querySelectorAll("#switch dt")].find((t) => t.textContent === term);
    return dt ? dt.nextElementSibling.textContent.trim() : "";
  };
  const note = () => {
    const shown = [
      text("#switch .state-pill"),
      text("[title='The REDIS_ENABLED switch']"),
      fact("Generation"),
    ].join("|");
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
    viewer("olivia", password=PASSWORD)
    page = browse(server)
    page.goto("/dashboard/")
    expect(page).to_have_url(server.url + "/accounts/login/?next=/dashboard/")
    page.get_by_label("Username").fill("olivia")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(server.url + "/dashboard/")
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.get_by_role("banner").get_by_text("olivia", exact=True)).to_be_visible()
    for label in TILES:
        tile = health_tile(page, label)
        expect(tile).to_be_visible()
        expect(tile).to_have_attribute("data-status", re.compile(r"^(pass|warn|fail)$"))
    for label in ["Database", "Redis", "Switch", "Breaker", "Channel layer"]:
        expect(health_tile(page, label)).to_have_attribute("data-status", "pass")
    expect(switch_badge(page)).to_have_text("caching on")
    expect(switch_state(page)).to_have_text("ON")
    for title in CHARTS:
        expect(chart(page, title)).to_be_visible()
    expect(page.get_by_text("No active alerts.")).to_be_visible()
    wait_live(page)
    expect(live_status(page)).to_have_text("live")
    expect(degraded_banner(page)).to_be_hidden()


def test_it_shows_new_traffic_without_a_reload(server, browse):
    make_org()
    page = browse(server, viewer("olivia"))
    page.goto("/dashboard/")
    wait_live(page)
    page.evaluate("window.e2eLoaded = 'once'")
    sms_chart = chart(page, "webhook_sms")
    expect(sms_chart).to_have_count(0)
    requests = chart(page, "Requests")
    before = requests.get_by_role("status").text_content()
    assert before == "—" or float(before.removesuffix(" req/s")) < 0.5, before

    for n in range(30):
        assert server.post_sms(sms_sid(n), f"Text number {n}") == 200

    # 30 texts in the last minute: at least 0.5 requests a second, and a latency chart of
    # their own, drawn from the evaluator's pushed snapshots (or the page's own polling).
    expect(sms_chart).to_be_visible(timeout=SHOWN_WITHIN_MS)
    # At least 0.5 req/s, two decimals.
    expect(requests.get_by_role("status")).to_have_text(
        re.compile(r"^(0\.[5-9]\d|[1-9]\d*\.\d\d) req/s$"), timeout=SHOWN_WITHIN_MS
    )
    expect(requests.get_by_role("status")).to_have_text(re.compile(r"^\d+\.\d\d req/s$"))
    table = requests.get_by_role("table", include_hidden=True)
    newest = table.get_by_role("cell", include_hidden=True).first
    assert float(newest.text_content().removesuffix(" req/s")) >= 0.5
    assert page.evaluate("window.e2eLoaded") == "once", "the page was reloaded"


def test_it_flips_the_switch_on_every_open_page_within_a_second(server, browse):
    page = browse(server, flipper("olivia"))
    other = browse(server, viewer("sam"))
    for each in (page, other):
        each.context.add_init_script(SWITCH_WATCH)
        each.goto("/dashboard/")
        expect(switch_state(each)).to_have_text("ON")
        wait_live(each)
    generation = int(switch_fact(page, "Generation").text_content())

    page.get_by_role("button", name="Turn caching off…").click()
    dialog = page.get_by_role("dialog", name="Turn Redis caching off?")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Reason").fill(REASON_OFF)
    clicked = time.time()
    dialog.get_by_role("button", name="Turn caching off", exact=True).click()
    # This page shows the form's answer; the other one gets the websocket's push.
    for each in (page, other):
        expect(switch_state(each)).to_have_text("OFF", timeout=SHOWN_WITHIN_MS)
        assert_shown_within_a_second(each, f"OFF|caching off|{generation}", clicked)
        expect(switch_fact(each, "Reason")).to_have_text(REASON_OFF)
        expect(switch_fact(each, "Last change")).to_have_text(last_change_by("olivia"))
    audit = SwitchAudit.objects.get()
    assert (audit.actor, audit.action, audit.source, audit.reason) == (
        "olivia",
        SwitchAudit.Action.DISABLE,
        "dashboard",
        REASON_OFF,
    )
    assert (audit.old_enabled, audit.new_enabled, audit.generation) == (True, False, generation)

    flash = page.get_by_role("status").filter(has_text="Caching is now off")
    expect(flash).to_contain_text("Caching is now off")
    expect(flash).to_have_class(re.compile(r"\bflash__item--success\b"))
    page.get_by_role("button", name="Turn caching on…").click()
    dialog = page.get_by_role("dialog", name="Turn Redis caching on?")
    dialog.get_by_label("Reason").fill(REASON_ON)
    clicked = time.time()
    dialog.get_by_role("button", name="Turn caching on", exact=True).click()
    for each in (page, other):
        expect(switch_fact(each, "Generation")).to_have_text(
            str(generation + 1), timeout=SHOWN_WITHIN_MS
        )
        assert_shown_within_a_second(each, f"ON|caching on|{generation + 1}", clicked)
        expect(switch_fact(each, "Reason")).to_have_text(REASON_ON)
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
    page = browse(server, viewer("sam"))
    page.goto("/dashboard/")
    expect(page.get_by_text("You can see the switch but not flip it")).to_be_visible()
    expect(switch_state(page)).to_have_text("ON")
    for name in ["Turn caching off…", "Turn caching on…", "Flush cache…"]:
        expect(page.get_by_role("button", name=name, include_hidden=True)).to_have_count(0)
    off_dialog = page.get_by_role("dialog", name="Turn Redis caching off?", include_hidden=True)
    expect(off_dialog).to_have_count(0)

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
        assert "this page or action is for operations staff with the right permission" in (
            response.text()
        )
    assert not SwitchAudit.objects.exists()
    assert (CacheSwitch.objects.get().enabled, CacheSwitch.objects.get().generation) == (True, 1)
    page.reload()
    expect(switch_state(page)).to_have_text("ON")


def test_it_sends_anonymous_users_to_the_login_page_and_refuses_their_websocket(server, browse):
    page = browse(server)
    for path in ["/dashboard/", "/dashboard/alerts/", "/dashboard/switch/", "/dashboard/leads/"]:
        page.goto(path)
        expect(page).to_have_url(f"{server.url}/accounts/login/?next={path}")
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
    expect(live_status(page)).to_have_count(0)
    refused = page.evaluate(WEBSOCKET_OUTCOME, "/ws/monitoring/")
    assert refused["opened"] is False, refused
    assert refused["code"] is not None, "the socket neither opened nor closed"

    # The same socket from a staff member's page opens: the refusal was about who asked.
    staff = browse(server, viewer("olivia"))
    staff.goto("/dashboard/")
    assert staff.evaluate(WEBSOCKET_OUTCOME, "/ws/monitoring/") == {"opened": True, "code": 1000}


def test_it_shows_a_new_text_on_the_open_lead_page(server, browse):
    make_org()
    assert server.post_sms(sms_sid(1), "Do you have e-bikes in stock?") == 200
    first = Message.objects.get()
    page = browse(server, viewer("olivia"))
    page.goto(f"/dashboard/leads/{first.conversation.lead_id}/")
    messages = page.get_by_role("region", name="Conversations").get_by_role("listitem")
    expect(messages).to_have_count(1)
    expect(messages.filter(has_text="e-bikes in stock")).to_have_attribute(
        "data-message-id", str(first.id)
    )
    wait_live(page)
    page.evaluate("window.e2eLoaded = 'once'")

    assert server.post_sms(sms_sid(2), "Can I book a test ride on Saturday?") == 200
    second = Message.objects.exclude(pk=first.pk).get()
    shown = messages.filter(has_text="Can I book a test ride on Saturday?")
    expect(shown).to_have_attribute("data-message-id", str(second.id), timeout=SHOWN_WITHIN_MS)
    expect(shown).to_have_attribute("data-role", Message.Role.CUSTOMER)
    expect(shown).to_have_class(re.compile(r"\bmsg--new\b"))
    expect(messages).to_have_count(2)
    assert page.evaluate("window.e2eLoaded") == "once", "the page was reloaded"
