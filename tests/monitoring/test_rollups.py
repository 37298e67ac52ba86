"""The history: every process's windows merged into one row per minute and minutes into
hours, never added twice (also with two processes rolling up at once), each resolution pruned
after its own retention, and long periods and chart ranges read from the right resolution."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.test import Client, override_settings

from monitoring.metrics import flusher, history, rollups, store
from monitoring.models import MetricRollup, MetricWindow, RollupMark
from tests.monitoring.history_support import (
    T0,
    at,
    lookups,
    redis_sample,
    requests,
    window,
)
from tests.monitoring.metrics_support import ROOT, TOKEN, bearer, subprocess_environment

pytestmark = pytest.mark.django_db
SECOND = timedelta(seconds=1)


def minute_row(start):
    return MetricRollup.objects.get(resolution="minute", started_at=start).data


def hour_row(start):
    return MetricRollup.objects.get(resolution="hour", started_at=start).data


def two_processes_in_one_minute():
    window(
        "web-1",
        at(0) + 10 * SECOND,
        requests={"webhook_sms": requests((200, 4), (502, 30))},
        cache={"leads": lookups(3, 1)},
        counters={"webhook.elevenlabs.initiation_fallback": 1},
        server=redis_sample(at(0) + 9 * SECOND, used=1000, max_memory=4000),
    )
    window(
        "web-2",
        at(0) + 55 * SECOND,
        requests={"webhook_sms": requests((200, 8))},
        cache={"leads": lookups(1, 1)},
    )
    # Ends in the next minute: rolled up with that one.
    window("web-1", at(1) + 5 * SECOND, requests={"webhook_sms": requests((200, 4))})


# --- minutes and hours ----------------------------------------------------------------------


def test_it_merges_every_process_window_into_one_row_per_minute():
    two_processes_in_one_minute()

    written = rollups.roll_up(now=at(1) + 30 * SECOND)

    assert written == {"minute": 1, "hour": 0}
    assert MetricRollup.objects.filter(resolution="minute").count() == 1
    minute = minute_row(at(0))
    sms = minute["requests"]["webhook_sms"]
    assert (sms["count"], sms["errors"], sms["status"]) == (3, 1, {"2xx": 2, "5xx": 1})
    assert (sms["latency_sum_ms"], sms["latency_max_ms"]) == (42.0, 30.0)
    assert (minute["cache"]["leads"]["hits"], minute["cache"]["leads"]["misses"]) == (4, 2)
    assert minute["counters"] == {"webhook.elevenlabs.initiation_fallback": 1}
    assert (minute["processes"], minute["windows"]) == (["web-1", "web-2"], 2)
    assert (minute["app_minutes"], minute["redis_minutes"]) == (1, {"sampled": 1, "down": 0})
    assert minute["server"]["used_memory_bytes"] == 1000
    assert (minute["server"]["samples"], minute["server"]["down"]) == (1, 0)
    assert RollupMark.objects.get(resolution="minute").rolled_up_to == at(1)


def test_it_waits_for_every_process_to_flush_into_a_minute():
    window("web-1", at(0) + 10 * SECOND, requests={"webhook_sms": requests((200, 4))})

    # 10 s after the minute's end: a process may still flush into it (the delay is 15 s).
    assert rollups.roll_up(now=at(1) + 10 * SECOND) == {"minute": 0, "hour": 0}
    assert rollups.roll_up(now=at(1) + 16 * SECOND) == {"minute": 1, "hour": 0}


def test_it_merges_the_minutes_of_an_hour_into_one_row():
    for minute in (0, 1, 59):
        window("web-1", at(minute) + 20 * SECOND, requests={"webhook_sms": requests((200, 4))})
        window("web-2", at(minute) + 40 * SECOND, requests={"dashboard": requests((200, 10))})
    window("web-1", at(60) + 20 * SECOND, requests={"webhook_sms": requests((200, 4))})

    written = rollups.roll_up(now=at(61) + 30 * SECOND)

    assert written == {"minute": 4, "hour": 1}
    hour = hour_row(at(0))
    assert hour["requests"]["webhook_sms"]["count"] == 3
    assert hour["requests"]["dashboard"]["count"] == 3
    assert (hour["windows"], hour["app_minutes"]) == (6, 3)
    assert hour["redis_minutes"] == {"sampled": 0, "down": 0}
    assert not MetricRollup.objects.filter(resolution="hour", started_at=at(60)).exists()
    assert RollupMark.objects.get(resolution="hour").rolled_up_to == at(60)


def test_it_counts_a_minute_with_any_failed_redis_sample_as_down():
    window("app", at(0) + 5 * SECOND, server=redis_sample(at(0) + 5 * SECOND))
    window("app", at(0) + 10 * SECOND, server=redis_sample(at(0) + 10 * SECOND, connected=False))
    window("app", at(1) + 5 * SECOND, server=redis_sample(at(1) + 5 * SECOND))
    # Caching off: Redis is not checked, so the minute is neither up nor down.
    window("app", at(2) + 5 * SECOND, server=redis_sample(at(2), connected=False, checked=False))

    rollups.roll_up(now=at(3) + 20 * SECOND)

    assert minute_row(at(0))["redis_minutes"] == {"sampled": 1, "down": 1}
    assert minute_row(at(1))["redis_minutes"] == {"sampled": 1, "down": 0}
    assert minute_row(at(2))["redis_minutes"] == {"sampled": 0, "down": 0}
    assert minute_row(at(2))["app_minutes"] == 1


# --- idempotence ----------------------------------------------------------------------------


def test_it_never_adds_a_minute_twice():
    two_processes_in_one_minute()
    rollups.roll_up(now=at(1) + 30 * SECOND)
    # Too late for its minute, already rolled up: it is not added to it.
    window("web-3", at(0) + 50 * SECOND, requests={"webhook_sms": requests((200, 4))})

    again = rollups.roll_up(now=at(1) + 30 * SECOND)

    assert again == {"minute": 0, "hour": 0}
    assert minute_row(at(0))["requests"]["webhook_sms"]["count"] == 3
    assert MetricRollup.objects.count() == 1


def test_it_rolls_up_only_what_is_new_each_time():
    two_processes_in_one_minute()
    rollups.roll_up(now=at(1) + 30 * SECOND)

    written = rollups.roll_up(now=at(2) + 30 * SECOND)

    assert written == {"minute": 1, "hour": 0}
    assert minute_row(at(0))["requests"]["webhook_sms"]["count"] == 3
    assert minute_row(at(1))["requests"]["webhook_sms"]["count"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_rolls_up_each_minute_once_when_two_processes_roll_up_at_once():
    for minute in range(3):
        for process in ("web-1", "web-2"):
            window(
                process,
                at(minute) + 30 * SECOND,
                requests={"webhook_sms": requests((200, 4), (200, 6))},
            )
    now = (at(3) + 30 * SECOND).isoformat()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.monitoring.rollup_process", name, now],
            cwd=ROOT,
            env=subprocess_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    outputs = [child.communicate("go\n", timeout=60) for child in children]

    assert [child.returncode for child in children] == [0, 0], [err for _, err in outputs]
    minutes_written = sum(int(out.split()[1]) for out, _ in outputs)
    assert minutes_written == 3
    assert MetricRollup.objects.filter(resolution="minute").count() == 3
    for minute in range(3):
        row = minute_row(at(minute))
        assert (row["requests"]["webhook_sms"]["count"], row["windows"]) == (4, 2)
        assert row["processes"] == ["web-1", "web-2"]


# --- retention ------------------------------------------------------------------------------


def rollup(resolution, started_at):
    return MetricRollup.objects.create(resolution=resolution, started_at=started_at, data={})


@override_settings(METRICS_MINUTE_RETENTION_DAYS=14, METRICS_HOUR_RETENTION_DAYS=400)
def test_it_prunes_each_resolution_after_its_own_retention():
    now = at(days=500)
    rollup("minute", now - timedelta(days=14, minutes=1))
    kept_minute = rollup("minute", now - timedelta(days=13, hours=23))
    rollup("hour", now - timedelta(days=400, hours=1))
    kept_hour = rollup("hour", now - timedelta(days=399))
    old_hour_as_minute_age = rollup("hour", now - timedelta(days=15))

    deleted = rollups.prune_rollups(now=now)

    assert deleted == {"minute": 1, "hour": 1}
    assert set(MetricRollup.objects.values_list("id", flat=True)) == {
        kept_minute.id,
        kept_hour.id,
        old_hour_as_minute_age.id,
    }


@override_settings(METRICS_RETENTION_HOURS=24)
def test_it_keeps_the_history_when_the_raw_windows_are_pruned():
    MetricWindow.objects.create(
        process="web-1",
        started_at=at(days=-10),
        ended_at=at(days=-10) + 5 * SECOND,
        data={},
    )
    kept = rollup("minute", at(days=-10))

    assert store.prune() == 1
    assert list(MetricRollup.objects.values_list("id", flat=True)) == [kept.id]


# --- reading long periods -------------------------------------------------------------------


def history_over_two_days():
    """Windows on two days, rolled up to 10:30 of the second: a request per window."""
    for day in (0, 1):
        for minute in (0, 30, 90):
            window(
                "web-1",
                at(minute, days=day) + 20 * SECOND,
                requests={"webhook_sms": requests((200, 4))},
            )
    rollups.roll_up(now=at(90, days=1) + 30 * SECOND)
    # Since the last minute rolled up: read from the raw windows.
    window("web-1", at(91, days=1) + 20 * SECOND, requests={"webhook_sms": requests((502, 40))})


def test_it_reads_a_long_period_from_hours_minutes_and_raw_windows_each_once():
    history_over_two_days()
    now = at(92, days=1)

    week = history.figures(7 * 86400, now=now)
    since_yesterday_9_15 = history.figures(int((now - at(15, days=1)).total_seconds()), now=now)

    assert week["route_groups"]["webhook_sms"]["requests"] == 7
    assert week["route_groups"]["webhook_sms"]["errors"] == 1
    # 09:15 onwards on day 1: 09:30 (a minute row within the first, partial hour), 10:30
    # (a minute after the last hour rolled up) and the raw window.
    assert since_yesterday_9_15["route_groups"]["webhook_sms"]["requests"] == 3


def test_it_reads_from_the_rows_of_each_resolution():
    history_over_two_days()
    now = at(92, days=1)
    # The windows rolled up are pruned: only the rollups have them now.
    MetricWindow.objects.filter(ended_at__lt=at(90, days=1)).delete()

    assert history.figures(7 * 86400, now=now)["route_groups"]["webhook_sms"]["requests"] == 7


@pytest.mark.parametrize(("window_name", "seconds"), [("7d", 604800), ("30d", 2592000)])
def test_it_answers_the_long_windows_from_the_history(window_name, seconds):
    history_over_two_days()

    with override_settings(MONITORING_TOKEN=TOKEN):
        response = Client().get(
            "/api/monitoring/metrics/performance", {"window": window_name}, headers=bearer()
        )

    assert response.status_code == 200
    body = response.json()
    assert (body["window"], body["window_seconds"]) == (window_name, seconds)
    assert body["route_groups"]["webhook_sms"]["requests"] == 7


# --- chart ranges ---------------------------------------------------------------------------


def test_it_draws_a_week_from_the_hours():
    history_over_two_days()

    doc = history.series("7d", now=at(92, days=1))

    assert (doc["resolution"], doc["step_seconds"], len(doc["points"])) == ("hour", 3600, 168)
    # The last point is the last hour rolled up (09:00-10:00 of day 1), and ends at 10:00.
    assert doc["points"][-1]["t"] == at(60, days=1).isoformat()
    # Day 0's 09:00 and 10:00 hours (2 and 1 requests), then day 1's 09:00 hour.
    assert [p["requests"] for p in doc["points"][-25:]] == [2, 1] + [0] * 22 + [2]


def test_it_draws_a_day_from_the_minutes_five_at_a_time():
    history_over_two_days()

    doc = history.series("24h", now=at(92, days=1))

    assert (doc["resolution"], doc["step_seconds"], len(doc["points"])) == ("minute", 300, 288)
    assert doc["points"][-1]["t"] == at(90, days=1).isoformat()
    # Day 1's 09:00 and 09:30 minutes, in the points ending 09:05 and 09:35; 10:30 is not
    # rolled up yet.
    assert [p["requests"] for p in doc["points"][-19:]] == [0, 1] + [0] * 5 + [1] + [0] * 11


def test_it_counts_traffic_not_health_probes_in_the_error_rate_chart():
    window(
        "web-1",
        at(0) + 20 * SECOND,
        requests={
            "webhook_sms": requests((200, 4), (200, 4), (500, 4), (200, 4)),
            "monitoring_api": requests(*[(503, 1)] * 6),
        },
    )
    rollups.roll_up(now=at(1) + 30 * SECOND)

    point = history.series("1h", now=at(1) + 30 * SECOND)["points"][-1]

    assert (point["requests"], point["error_rate"]) == (10, 0.25)


@pytest.mark.parametrize("query", ["window=2d", "window=15m"])
def test_it_refuses_a_chart_range_it_does_not_keep(query):
    with override_settings(MONITORING_TOKEN=TOKEN):
        response = Client().get(f"/api/monitoring/metrics/series?{query}", headers=bearer())
    assert response.status_code == 400
    assert response.json()["error"] == "window must be one of 1h, 24h, 7d, 30d"


def test_it_says_nothing_is_rolled_up_before_the_first_rollup():
    assert rollups.watermark("minute") is None
    assert history.figures(7 * 86400, now=T0)["overall"]["requests"] == 0


def test_it_keeps_the_flusher_going_through_a_rollup_that_fails(monkeypatch, caplog):
    def broken(now=None):
        raise KeyError("requests")

    monkeypatch.setattr(rollups, "roll_up", broken)

    flusher.roll_up()

    assert "metrics: rollup failed" in caplog.text
