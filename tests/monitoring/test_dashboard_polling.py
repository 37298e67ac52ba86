"""The JSON the dashboard's pages poll and chart from: the stored switch state, and the
request and cache series of every process in equal buckets."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client, override_settings

from monitoring.cache import switch
from monitoring.metrics import series as metric_series
from monitoring.metrics import store
from monitoring.models import (
    MetricWindow,
)
from tests.monitoring.dashboard_support import PINNED

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_configured")]


# --- the JSON the pages poll ----------------------------------------------------------------


def test_it_answers_the_stored_switch_state_for_polling(sam):
    switch.set_caching(False, actor="ops", reason="incident", source="cli")
    body = sam.get("/api/monitoring/switch").json()
    assert (body["enabled"], body["source"], body["generation"], body["changed_by"]) == (
        False,
        "runtime",
        1,
        "ops",
    )
    assert (body["can_flip"], body["why_unavailable"], body["breaker"]) == (True, "", "closed")


def test_it_says_why_the_switch_cannot_flip_in_the_polled_state(sam):
    with override_settings(REDIS_ENABLED=False):
        body = sam.get("/api/monitoring/switch").json()
    assert (body["enabled"], body["source"], body["can_flip"]) == (False, "environment", False)
    assert body["why_unavailable"] == PINNED


def test_it_answers_401_to_anonymous_polls():
    assert Client().get("/api/monitoring/switch").status_code == 401
    assert Client().get("/api/monitoring/metrics/series").status_code == 401


def window(process: str, ended: datetime, requests: dict, cache: dict, server=None) -> None:
    data = {"requests": requests, "cache": cache, "counters": {}}
    if server is not None:
        data["server"] = server
    MetricWindow.objects.create(
        process=process, started_at=ended - timedelta(seconds=5), ended_at=ended, data=data
    )


def group(count: int, errors: int, bucket: int) -> dict:
    buckets = [0] * 15
    buckets[bucket] = count
    return {
        "count": count,
        "errors": errors,
        "status": {"2xx": count - errors, "5xx": errors},
        "latency_sum_ms": 3.0 * count,
        "latency_max_ms": 4.0,
        "buckets": buckets,
        "sql": 0,
    }


def test_it_charts_every_process_in_equal_buckets():
    now = datetime(2026, 3, 2, 15, 0, 7, tzinfo=UTC)  # the bucket ending 15:00:15 is still open
    bucket_one = datetime(2026, 3, 2, 14, 59, 50, tzinfo=UTC)  # in (14:59:45, 15:00:00]
    window("a:1", bucket_one, {"webhook_sms": group(10, 1, 2)}, {"lead": {"hits": 3, "misses": 1}})
    window("b:2", bucket_one, {"dashboard": group(5, 0, 2)}, {"lead": {"hits": 1, "misses": 3}})
    server = {"at": 1.0, "connected": True, "latency_ms": 0.4, "used_memory_bytes": 2048}
    window("a:1", bucket_one - timedelta(seconds=20), {}, {}, server=server)  # (14:59:15, :30]
    window("a:1", now, {"webhook_sms": group(99, 0, 2)}, {})  # the open bucket: left out

    doc = metric_series.series(minutes=1, step_seconds=15, now=now)

    assert (doc["minutes"], doc["step_seconds"]) == (1, 15)
    assert [p["t"] for p in doc["points"]] == [
        "2026-03-02T14:59:15+00:00",
        "2026-03-02T14:59:30+00:00",
        "2026-03-02T14:59:45+00:00",
        "2026-03-02T15:00:00+00:00",
    ]
    last = doc["points"][-1]
    assert (last["requests"], last["requests_per_second"], last["error_rate"]) == (15, 1.0, 0.0667)
    assert (last["hit_rate"], last["lookups"]) == (0.5, 8)
    assert set(last["route_groups"]) == {"webhook_sms", "dashboard"}
    assert last["route_groups"]["dashboard"]["requests_per_second"] == 0.333
    assert last["p95_ms"] == 4.0  # never above the slowest request
    quiet = doc["points"][1]
    assert (quiet["requests"], quiet["error_rate"], quiet["hit_rate"]) == (0, None, None)
    assert (quiet["redis_ping_ms"], quiet["redis_memory_bytes"]) == (0.4, 2048)
    assert doc["points"][0]["redis_ping_ms"] is None


def test_it_serves_the_chart_series_to_staff(sam):
    body = sam.get("/api/monitoring/metrics/series?minutes=2&step=30").json()
    assert (body["minutes"], body["step_seconds"], len(body["points"])) == (2, 30, 4)


@pytest.mark.parametrize("query", ["minutes=0", "minutes=61", "step=4", "step=x"])
def test_it_refuses_chart_series_it_cannot_draw(sam, query):
    response = sam.get(f"/api/monitoring/metrics/series?{query}")
    assert response.status_code == 400
    assert "error" in response.json()


def test_it_keeps_the_evaluators_redis_sample_for_the_next_window():
    store.note_server_sample({"at": 5.0, "connected": True, "latency_ms": 0.3})
    row = store.flush()
    assert row.data["server"] == {"at": 5.0, "connected": True, "latency_ms": 0.3}
    second = store.flush()
    assert second is None or "server" not in second.data


def test_it_uses_the_current_time_by_default():
    assert len(metric_series.series(minutes=1, step_seconds=30)["points"]) == 2
