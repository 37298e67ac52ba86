"""Incident response in the browser: the automatic rollback's banner appearing on an open page
when the served app's Redis dies, and the way back from it; a silence made with the form and
shown on the overview; an incident's page with its timeline and a note; the charts' marks."""

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.alerts import engine, incidents
from monitoring.alerts.rules import Rule, Sample
from monitoring.cache import controls
from monitoring.models import Alert, Incident, SwitchAudit
from tests.e2e.support import (
    SHOWN_WITHIN_MS,
    active_alerts,
    expect,
    serving,
    sms_sid,
    switch_state,
    wait_live,
)
from tests.factories import make_org
from tests.monitoring.evaluator_support import slack_catching
from tests.personas import flipper, viewer

pytestmark = pytest.mark.django_db(transaction=True)

DRILL = Rule("e2e_incident", "critical", "Drill incident", lambda s: 1.0, 0.5, True, 0.4, 0)
SAMPLE = Sample(caching_enabled=True, redis={}, minute={}, five_minutes={})


@pytest.fixture(scope="module")
def slack_catcher():
    with slack_catching() as catcher:
        yield catcher


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory, django_db_setup, django_db_blocker, slack_catcher):
    log_dir = tmp_path_factory.mktemp("served")
    with serving(
        log_dir,
        django_db_blocker,
        AUTO_ROLLBACK="redis_lost",
        AUTO_ROLLBACK_AFTER_SECONDS="1",
        REDIS_ALERT_WEBHOOK_URL=slack_catcher.url,
        NOTIFICATION_POLL_SECONDS="0.2",
    ) as served:
        yield served


def banner(page):
    return page.get_by_role("alert").filter(has_text="Caching was turned off automatically")


def test_it_shows_the_rollback_banner_live_and_turns_caching_back_on_from_it(server, browse):
    page = browse(server, flipper("olivia"))
    page.goto("/dashboard/")
    wait_live(page)
    page.evaluate("window.e2eLoaded = 'once'")
    expect(banner(page)).to_be_hidden()

    make_org()
    server.cache_redis.stop()
    for n in range(4):  # traffic while Redis is down: the breaker opens
        assert server.post_sms(sms_sid(n), "Are you open today?") == 200
    expect(banner(page)).to_be_visible(timeout=SHOWN_WITHIN_MS)
    expect(banner(page)).to_contain_text("Redis connection lost firing since")
    expect(switch_state(page)).to_have_text("OFF")
    assert page.evaluate("window.e2eLoaded") == "once", "the page was reloaded"

    server.cache_redis.start()
    banner(page).get_by_role("button", name="Turn caching back on…").click()
    dialog = page.get_by_role("dialog", name="Turn Redis caching back on?")
    dialog.get_by_label("Reason").fill("Redis restarted and checked")
    dialog.get_by_role("button", name="Turn caching on", exact=True).click()
    expect(switch_state(page)).to_have_text("ON", timeout=SHOWN_WITHIN_MS)
    expect(banner(page)).to_be_hidden()
    assert list(SwitchAudit.objects.order_by("at").values_list("actor", "new_enabled"))[-2:] == [
        ("system", False),
        ("olivia", True),
    ]

    # The outage's incident tells all of it, acknowledgement and a note included.
    deadline = time.monotonic() + SHOWN_WITHIN_MS / 1000
    while not incidents.breaker_changes(timezone.now() - timedelta(minutes=5), timezone.now()):
        assert time.monotonic() < deadline, "no breaker transition reached the metric windows"
        time.sleep(0.2)
    alert = Alert.objects.get(rule="redis_connection_lost")
    page.goto(f"/dashboard/alerts/{alert.pk}/")
    page.get_by_role("button", name="Acknowledge").click()
    page.get_by_role("link", name=f"#{alert.incident_id}", exact=True).click()
    page.get_by_label("Add a note").fill("Redis was restarted by hand")
    page.get_by_role("button", name="Add note").click()
    timeline = page.get_by_role("list", name="Timeline")
    for text in [
        re.compile(r"app process \S+ started"),
        "redis_connection_lost: opened → pending",
        "redis_connection_lost: pending → firing",
        "slack told of redis_connection_lost firing: sent (attempt 1)",
        re.compile(r"breaker in \S+: closed → open"),
        "system (system): turn caching off — automatic rollback (AUTO_ROLLBACK=redis_lost)",
        "redis_connection_lost: firing → resolved",
        "olivia acknowledged redis_connection_lost",
        "olivia (dashboard): turn caching on — Redis restarted and checked",
        "olivia: Redis was restarted by hand",
    ]:
        expect(timeline.get_by_role("listitem").filter(has_text=text).first).to_be_visible()


def test_it_creates_a_silence_with_the_form_and_shows_it_on_the_overview(server, browse):
    page = browse(server, flipper("oscar"))
    page.goto("/dashboard/silences/")
    page.get_by_label("Rule").select_option("cache_hit_rate_low")
    page.get_by_label("Reason").fill("Cache warming after the deploy")
    page.get_by_label("Lasts").fill("2h")
    page.get_by_role("button", name="Create silence").click()
    current = page.get_by_role("region", name="In force and to come")
    expect(
        current.get_by_role("row").filter(has_text="Cache warming after the deploy")
    ).to_be_visible()
    page.goto("/dashboard/")
    silenced = page.get_by_role("list", name="Silences in force")
    expect(silenced).to_contain_text("cache_hit_rate_low (Cache warming after the deploy, oscar)")
    page.goto("/dashboard/silences/")
    page.get_by_role("button", name="End now").click()
    expect(page.get_by_role("region", name="Ended")).to_contain_text("ended early by oscar")


def test_it_shows_an_incidents_timeline_takes_a_note_and_marks_the_charts(server, browse):
    engine.evaluate([DRILL], SAMPLE, timezone.now())
    controls.flip(False, reason="drill: off while we look", source="cli", actor="oncall")
    incident = Incident.objects.get(alerts__rule="e2e_incident")
    page = browse(server, viewer("sam"))
    page.goto("/dashboard/")
    alert_row = active_alerts(page).get_by_role("listitem").filter(has_text="e2e_incident")
    alert_row.get_by_role("link", name=f"incident #{incident.pk}").click()
    expect(page.get_by_role("heading", name=re.compile(f"Incident #{incident.pk}"))).to_be_visible()
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline).to_contain_text("e2e_incident: opened → pending")
    expect(timeline).to_contain_text("oncall (cli): turn caching off — drill: off while we look")
    page.get_by_label("Add a note").fill("Looked at the replica: fine")
    page.get_by_role("button", name="Add note").click()
    expect(page.get_by_role("list", name="Timeline")).to_contain_text(
        "sam: Looked at the replica: fine"
    )

    page.goto("/dashboard/")
    marks = page.locator("#chart-hit-rate svg .mark--switch title")
    expect(marks.first).to_have_text("turn caching off by oncall", timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#chart-hit-rate svg .mark--incident").first).to_be_attached()
    controls.flip(True, reason="drill over", source="cli", actor="oncall")
