"""The weekly review in a browser, against a served app with a week of history: reached from
the navigation, the runbook's criteria each met or missed with its figure, another period
chosen; and the overview's charts drawn over a longer range."""

import re

import pytest
from django.utils import timezone

from tests.e2e.support import chart, expect, serving, wait_live
from tests.monitoring.history_support import a_busy_week
from tests.personas import viewer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory, django_db_setup, django_db_blocker):
    # No evaluator: the week's Redis samples are the history's alone (the served app's own
    # Redis, sampled, would be the latest and have no maxmemory).
    environment = {"REDIS_MONITORING_ENABLED": "false"}
    with serving(tmp_path_factory.mktemp("served"), django_db_blocker, **environment) as served:
        yield served


def criterion(page, label: str):
    return (
        page.get_by_role("region", name="Success criteria")
        .get_by_role("listitem")
        .filter(has_text=label)
    )


def test_it_shows_the_week_under_review_with_each_criterion_judged(server, browse, tmp_path):
    # Up to an hour ago: the served app's own rollups write the minutes since.
    week = a_busy_week(timezone.now() - timezone.timedelta(hours=1))
    page = browse(server, viewer("olivia"))
    page.goto("/dashboard/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Review").click()

    expect(page.get_by_role("heading", name="Review of the last 7 days", level=1)).to_be_visible()
    hit_rate = criterion(page, "Hit rate ≥ 70 % after warm-up")
    expect(hit_rate).to_contain_text("met")
    timeouts = criterion(page, "Zero webhook timeouts")
    expect(timeouts).to_contain_text("missed")
    expect(timeouts).to_contain_text(
        re.compile(r"2 of [\d,]+ call initiations answered with the fallback")
    )
    uptime = criterion(page, "99.9 % Redis uptime with graceful fallback")
    expect(uptime).to_contain_text("met")
    expect(uptime).to_contain_text(re.compile(r"\(4 of [\d,]+ sampled minutes down\)"))
    latency = page.get_by_role("table", name="Latency per route group")
    expect(latency.get_by_role("rowheader", name="webhook_initiation")).to_be_visible()
    expect(page.get_by_test_id("memory-projection")).to_have_text(
        re.compile(r"^reaches maxmemory on \d{4}-\d\d-\d\d$")
    )
    page.screenshot(path=tmp_path / "review.png", full_page=True)
    assert week["fallback"] == 2

    page.get_by_role("navigation", name="Review period").get_by_role("link", name="30 days").click()
    expect(page.get_by_role("heading", name="Review of the last 30 days", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="30 days")).to_have_attribute("aria-current", "page")


def test_it_draws_the_overview_charts_over_the_last_seven_days(server, browse, tmp_path):
    a_busy_week(timezone.now() - timezone.timedelta(hours=1))
    page = browse(server, viewer("olivia"))
    page.goto("/dashboard/")
    wait_live(page)
    ranges = page.get_by_role("group", name="Chart range")

    ranges.get_by_role("button", name="7 d").click()

    expect(page.get_by_role("heading", name="Last 7 days")).to_be_visible()
    expect(ranges.get_by_role("button", name="7 d")).to_have_attribute("aria-pressed", "true")
    expect(ranges.get_by_role("button", name="15 min")).to_have_attribute("aria-pressed", "false")
    requests = chart(page, "Requests").get_by_role("img")
    expect(requests).to_have_attribute("aria-label", re.compile(r"over the last 7 days, lowest"))
    expect(page.get_by_text("One point per hour from the per-hour history")).to_be_visible()
    page.screenshot(path=tmp_path / "overview-7d.png", full_page=True)

    ranges.get_by_role("button", name="15 min").click()

    expect(page.get_by_role("heading", name="Last 15 minutes")).to_be_visible()
