"""The weekly review against hand-computed windows: the hit rate (after warm-up, by halves,
by day), p50/p95 per route group, the traffic's error rate, the initiations answered with the
fallback, the Redis memory projection, the uptime of Redis and of the app, and the runbook's
criteria each met or missed with its figure; `manage.py ops_report` prints the same."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from monitoring.metrics import review, rollups
from monitoring.models import SwitchAudit
from tests.monitoring.history_support import (
    at,
    lookups,
    redis_sample,
    requests,
    window,
)
from tests.personas import plain_user, viewer

pytestmark = pytest.mark.django_db
NOW = at(30, days=2)
FALLBACK = "webhook.elevenlabs.initiation_fallback"


def caching_turned_on(when):
    audit = SwitchAudit.objects.create(
        actor="olivia-ops",
        action=SwitchAudit.Action.ENABLE,
        source=SwitchAudit.Source.CLI,
        old_enabled=False,
        new_enabled=True,
        generation=2,
        reason="rollout phase 2",
    )
    SwitchAudit.objects.filter(pk=audit.pk).update(at=when)


def a_week_of_traffic(now=NOW):
    """Caching on 3.5 days before T0; a cold start, a busy day, a warm day; Redis sampled in
    four hours with memory growing 100 bytes an hour towards 10,000, and down once."""
    caching_turned_on(at(days=-3.5))
    window(
        "web-1",
        at(10, days=-3.5),  # in the warm-up hour
        requests={"webhook_initiation": requests(*[(200, 8)] * 10)},
        cache={"ctx": lookups(0, 10)},
    )
    window(
        "web-2",
        at(days=-2),
        requests={
            "webhook_initiation": requests(*[(200, 4)] * 19, (200, 600)),
            "webhook_sms": requests(*[(200, 2)] * 9, (503, 3)),
            "monitoring_api": requests(*[(503, 1)] * 5),  # health probes: not traffic
        },
        cache={"ctx": lookups(80, 20)},
        counters={FALLBACK: 1, "webhook.duplicate": 3},
    )
    window("web-1", at(days=1), cache={"ctx": lookups(90, 10)})
    for hour in range(4):
        sampled = at(1, hours=hour)
        window(
            "web-1", sampled, server=redis_sample(sampled, used=1000 + 100 * hour, max_memory=10000)
        )
    window("web-1", at(5), server=redis_sample(at(5), connected=False))
    # Caching off: Redis was not checked, so this minute is neither up nor down.
    window(
        "web-1", at(days=1, minutes=7), server=redis_sample(at(7), connected=False, checked=False)
    )
    rollups.roll_up(now=now)


def test_it_judges_the_hit_rate_after_warm_up_and_shows_its_trend():
    a_week_of_traffic()

    hit = review.report("7d", now=NOW)["hit_rate"]

    # 170 hits of 210 lookups; after the warm-up hour: 170 of 200.
    assert (hit["value"], hit["lookups"]) == (0.8095, 210)
    assert hit["after_warm_up"] == {"hit_rate": 0.85, "lookups": 200}
    assert hit["warm_up_ended_at"] == at(hours=1, days=-3.5).isoformat()
    # The halves split at 3.5 days after the start: 80 of 110, then 90 of 100.
    assert hit["trend"] == {
        "first_half": {"hit_rate": 0.7273, "lookups": 110},
        "second_half": {"hit_rate": 0.9, "lookups": 100},
        "change": 0.1727,
    }
    assert [day["lookups"] for day in hit["daily"]] == [0, 10, 100, 0, 0, 100, 0]
    assert hit["daily"][0]["from"] == (NOW - timedelta(days=7)).isoformat()


def test_it_gives_p50_and_p95_per_route_group_and_the_traffic_error_rate():
    a_week_of_traffic()

    body = review.report("7d", now=NOW)

    # 19 at 4 ms (2-5 ms bucket), 10 at 8 ms (5-10), 1 at 600 ms (500-1000): p50 at rank 15
    # is 2 + 3 * 15/19 ms; p95 at rank 28.5 is 5 + 5 * 9.5/10 ms.
    assert body["route_groups"]["webhook_initiation"] == {
        "requests": 30,
        "p50_ms": 4.37,
        "p95_ms": 9.75,
        "error_rate": 0.0,
    }
    # 9 at 2 ms (1-2 ms bucket), 1 at 3 ms: p50 1 + 5/9; p95 in 2-5 ms, capped at the slowest.
    assert body["route_groups"]["webhook_sms"] == {
        "requests": 10,
        "p50_ms": 1.56,
        "p95_ms": 3.0,
        "error_rate": 0.1,
    }
    # The health probes' five 503s are not traffic: 1 error in 40 requests.
    assert body["error_rate"] == {"requests": 40, "errors": 1, "error_rate": 0.025}
    assert body["initiations"] == {"requests": 30, "fallback": 1, "fallback_rate": 0.0333}


def test_it_projects_when_redis_memory_reaches_maxmemory():
    a_week_of_traffic()

    memory = review.report("7d", now=NOW)["redis_memory"]

    # 1000 bytes at T0 + 1 min, 100 more each hour: 10,000 bytes 90 hours on.
    assert memory["used_bytes"] == 1300
    assert memory["max_bytes"] == 10000
    assert memory["hours"] == 4
    assert memory["growth_bytes_per_day"] == 2400
    assert memory["reaches_max_at"] == at(1, hours=90).isoformat()
    assert memory["projection"] == f"reaches maxmemory on {at(1, hours=90):%Y-%m-%d}"


def test_it_says_when_redis_memory_is_not_growing():
    for hour, used in enumerate([5000, 4000, 4500, 3000]):
        sampled = at(2, hours=hour)
        window("web-1", sampled, server=redis_sample(sampled, used=used, max_memory=10000))
    rollups.roll_up(now=NOW)

    memory = review.report("7d", now=NOW)["redis_memory"]

    assert (memory["used_bytes"], memory["projection"]) == (3000, "not growing")
    assert memory["reaches_max_at"] is None
    assert memory["growth_bytes_per_day"] < 0


def test_it_counts_uptime_in_closed_minutes_since_the_history_began():
    a_week_of_traffic()

    uptime = review.report("7d", now=NOW)["uptime"]

    # From the first minute with a window (T0 - 3.5 d + 10 min) to the last minute rolled up
    # (NOW - 15 s, floored: T0 + 2 d + 29 min): 5.5 days and 19 minutes.
    assert (uptime["from"], uptime["to"]) == (
        at(10, days=-3.5).isoformat(),
        at(29, days=2).isoformat(),
    )
    assert uptime["app"] == {"minutes": 7939, "up": 9, "value": 0.001134}
    # Five minutes sampled (four hours' samples and the failed one), one of them down.
    assert uptime["redis"] == {"sampled": 5, "down": 1, "value": 0.8}


def test_it_marks_each_success_criterion_met_or_missed_with_its_figure():
    a_week_of_traffic()

    criteria = review.report("7d", now=NOW)["criteria"]

    assert [(c["name"], c["met"], c["value"]) for c in criteria] == [
        ("hit_rate", True, 0.85),
        ("webhook_timeouts", False, 1),
        ("redis_uptime", False, 0.8),
    ]
    assert [c["label"] for c in criteria] == [
        "Hit rate ≥ 70 % after warm-up",
        "Zero webhook timeouts",
        "99.9 % Redis uptime with graceful fallback",
    ]
    assert [c["figure"] for c in criteria] == [
        "85.0 % of 200 lookups after warm-up",
        "1 of 30 call initiations answered with the fallback",
        "80.00 % (1 of 5 sampled minutes down); traffic error rate while down —",
    ]


def test_it_meets_the_criteria_of_a_quiet_healthy_week():
    caching_turned_on(at(days=-10))
    for minute in range(3):
        sampled = at(minute)
        window(
            "web-1",
            sampled,
            requests={"webhook_initiation": requests((200, 4))},
            cache={"ctx": lookups(8, 2)},
            server=redis_sample(sampled, used=1000, max_memory=10000),
        )
    rollups.roll_up(now=NOW)

    criteria = review.report("7d", now=NOW)["criteria"]

    assert [(c["met"], c["value"]) for c in criteria] == [(True, 0.8), (True, 0), (True, 1.0)]


def test_it_leaves_the_hit_rate_unjudged_while_the_cache_warms():
    caching_turned_on(NOW - timedelta(minutes=30))

    criterion = review.report("7d", now=NOW)["criteria"][0]

    assert (criterion["met"], criterion["figure"]) == (None, "no lookups after warm-up")


def test_it_reads_periods_in_hours_and_days_only():
    assert review.period_seconds("24h") == 86400
    assert review.period_seconds("30d") == 2592000
    for wrong in ("7", "0d", "1w", "7d "):
        with pytest.raises(ValueError):
            review.period_seconds(wrong)


# --- the command ----------------------------------------------------------------------------


def test_it_prints_the_review_as_json():
    a_week_of_traffic(now=timezone.now())
    out = StringIO()

    call_command("ops_report", "--period", "7d", "--json", stdout=out)

    body = json.loads(out.getvalue())
    assert body["period"]["name"] == "7d"
    assert body["hit_rate"]["after_warm_up"] == {"hit_rate": 0.85, "lookups": 200}
    assert body["route_groups"]["webhook_initiation"]["p95_ms"] == 9.75
    assert body["error_rate"]["error_rate"] == 0.025
    assert body["initiations"]["fallback"] == 1
    assert body["uptime"]["redis"] == {"sampled": 5, "down": 1, "value": 0.8}
    assert [c["met"] for c in body["criteria"]] == [True, False, False]


def test_it_prints_the_review_as_text():
    a_week_of_traffic(now=timezone.now())
    out = StringIO()

    call_command("ops_report", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Review of 7d: ")
    assert "Hit rate: 81.0 % of 210 lookups; trend +17.3 points (second half vs first)" in lines
    assert "  webhook_initiation: 4.37 ms / 9.75 ms (30 requests)" in lines
    assert "Error rate (traffic): 2.50 % (1 of 40)" in lines
    assert "Call initiations answered with the fallback: 1 of 30" in lines
    assert "  [MET] Hit rate ≥ 70 % after warm-up: 85.0 % of 200 lookups after warm-up" in lines
    assert (
        "  [MISSED] Zero webhook timeouts: 1 of 30 call initiations answered with the fallback"
        in lines
    )


def test_it_refuses_a_period_it_cannot_read():
    with pytest.raises(CommandError, match="period must be hours or days"):
        call_command("ops_report", "--period", "week")


# --- the Review page ------------------------------------------------------------------------


def test_it_shows_the_review_to_staff(client):
    a_week_of_traffic(now=timezone.now())
    client.force_login(viewer())

    response = client.get("/dashboard/review/", {"period": "7d"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>Review of the last 7 days</h1>" in page
    assert 'data-criterion="webhook_timeouts"' in page
    assert "1 of 30 call initiations answered with the fallback" in page
    assert response.context["report"]["uptime"]["redis"]["value"] == 0.8


def test_it_has_no_review_of_a_period_it_does_not_offer(client):
    client.force_login(viewer())
    assert client.get("/dashboard/review/", {"period": "2d"}).status_code == 404


def test_it_keeps_the_review_from_visitors_who_are_not_staff(client):
    client.force_login(plain_user())
    assert client.get("/dashboard/review/").status_code == 403


def test_it_shows_a_review_with_no_history_yet(client):
    client.force_login(viewer())

    response = client.get("/dashboard/review/", {"period": "30d"})

    assert response.status_code == 200
    criteria = response.context["report"]["criteria"]
    assert [(c["met"], c["figure"]) for c in criteria] == [
        (None, "no lookups after warm-up"),
        (None, "0 of 0 call initiations answered with the fallback"),
        (None, "— (0 of 0 sampled minutes down); traffic error rate while down —"),
    ]
    assert response.context["report"]["redis_memory"]["projection"] == "no samples"
