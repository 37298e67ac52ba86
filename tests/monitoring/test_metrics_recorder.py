"""The in-process window: what Recorder.record keeps (latency buckets, status classes, 5xx
errors, latency sum and max, SQL), the route groups of METRICS_ROUTE_GROUPS, and the middleware
timing real requests through the test client, SQL counted from every thread a request uses."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path

from monitoring.metrics.middleware import route_group
from monitoring.metrics.recorder import LATENCY_BUCKETS_MS, Recorder, recorder
from tests.monitoring.metrics_support import reset_metrics

PROBE_GROUPS = [("/probe", "probe")]
worker_threads: list[int] = []


def run_queries(n: int) -> None:
    for _ in range(n):
        get_user_model().objects.exists()


def sql_view(request: HttpRequest, n: int) -> JsonResponse:
    run_queries(n)
    return JsonResponse({"ran": n})


async def sql_in_worker_view(request: HttpRequest, n: int) -> JsonResponse:
    """An async view that hands its queries to a worker thread (thread_sensitive=False)."""

    def work() -> None:
        worker_threads.append(threading.get_ident())
        try:
            run_queries(n)
        finally:
            connection.close()  # this worker thread's own connection

    await sync_to_async(work, thread_sensitive=False)()
    return JsonResponse({"ran": n})


def failing_view(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("the view broke")


urlpatterns = [
    path("probe/sql/<int:n>", sql_view),
    path("probe/sql-in-worker/<int:n>", sql_in_worker_view),
    path("probe/fail", failing_view),
]


@pytest.fixture(autouse=True)
def fresh_window():
    reset_metrics()
    worker_threads.clear()
    yield
    reset_metrics()


def buckets(**at_index: int) -> list[int]:
    """A bucket list, zero except at the given indexes (`i6=1` is bucket 6)."""
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for name, n in at_index.items():
        counts[int(name[1:])] = n
    return counts


# --- Recorder -------------------------------------------------------------------------------


def test_it_records_count_status_classes_errors_latency_and_sql():
    window = Recorder()
    # Latencies exact in binary floating point, so the sums below are exact.
    window.record("api", 200, 0.0625, 2)  # 62.5 ms: the <=100 ms bucket (6)
    window.record("api", 204, 0.001, 0)  # exactly 1 ms: the <=1 ms bucket (0)
    window.record("api", 302, 0.0, 0)  # 0 ms: bucket 0
    window.record("api", 404, 0.25, 1)  # 250 ms: the <=300 ms bucket (9)
    window.record("api", 500, 0.001953125, 0)  # 1.953125 ms: the <=2 ms bucket (1)
    window.record("api", 503, 8.0, 5)  # 8 s: past the last bound, the +Inf bucket (14)

    _, _, groups = window.take()

    assert groups == {
        "api": {
            "count": 6,
            "errors": 2,
            "status": {"2xx": 2, "3xx": 1, "4xx": 1, "5xx": 2},
            "latency_sum_ms": 62.5 + 1.0 + 0.0 + 250.0 + 1.953125 + 8000.0,
            "latency_max_ms": 8000.0,
            "buckets": buckets(i0=2, i1=1, i6=1, i9=1, i14=1),
            "sql": 8,
        }
    }


def test_it_counts_only_5xx_as_errors():
    window = Recorder()
    for status in (200, 301, 400, 401, 404, 429, 499):
        window.record("api", status, 0.01, 0)
    window.record("api", 500, 0.01, 0)
    window.record("api", 599, 0.01, 0)

    group = window.take()[2]["api"]

    assert group["errors"] == 2
    assert group["status"] == {"2xx": 1, "3xx": 1, "4xx": 5, "5xx": 2}


def test_it_keeps_route_groups_apart():
    window = Recorder()
    window.record("webhook_sms", 200, 0.004, 3)
    window.record("dashboard", 500, 0.5, 7)

    groups = window.take()[2]

    assert set(groups) == {"webhook_sms", "dashboard"}
    assert (groups["webhook_sms"]["count"], groups["webhook_sms"]["sql"]) == (1, 3)
    assert (groups["dashboard"]["errors"], groups["dashboard"]["sql"]) == (1, 7)
    assert groups["webhook_sms"]["latency_max_ms"] == 4.0
    assert groups["dashboard"]["latency_max_ms"] == 500.0


def test_it_starts_a_new_window_at_each_take():
    window = Recorder()
    window.record("api", 200, 0.01, 1)

    started, ended, groups = window.take()
    next_started, next_ended, next_groups = window.take()

    assert groups["api"]["count"] == 1
    assert next_groups == {}
    assert started <= ended
    assert next_started == ended
    assert next_ended >= next_started


# --- route groups ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_path", "group"),
    [
        ("/webhooks/elevenlabs/conversation-initiation", "webhook_initiation"),
        ("/webhooks/elevenlabs/post-call", "webhook_post_call"),
        ("/webhooks/twilio/sms/status", "webhook_sms_status"),
        ("/webhooks/twilio/sms", "webhook_sms"),
        ("/dashboard/leads/42", "dashboard"),
        ("/api/monitoring/health/ready", "monitoring_api"),
        ("/metrics", "monitoring_api"),
        ("/admin/login/", "admin"),
        ("/", "other"),
        ("/no-such-page", "other"),
    ],
)
def test_it_maps_paths_to_the_configured_route_groups(request_path, group):
    assert route_group(request_path) == group


def test_it_takes_the_first_matching_prefix():
    groups = [("/a", "first"), ("/a/b", "second")]
    with override_settings(METRICS_ROUTE_GROUPS=groups):
        assert route_group("/a/b/c") == "first"
        assert route_group("/b") == "other"


# --- the middleware -------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_records_requests_by_route_group_and_status_class():
    client = Client()

    assert client.get("/webhooks/twilio/sms/status").status_code == 405  # webhooks are POST only
    assert client.get("/no-such-page").status_code == 404
    assert client.get("/no-such-page-either").status_code == 404
    assert client.get("/api/monitoring/health/live").status_code == 200
    assert client.get("/").status_code == 302

    groups = recorder.take()[2]
    assert {name: (g["count"], g["errors"], g["status"]) for name, g in groups.items()} == {
        "webhook_sms_status": (1, 0, {"4xx": 1}),
        "other": (3, 0, {"4xx": 2, "3xx": 1}),
        "monitoring_api": (1, 0, {"2xx": 1}),
    }
    # The latency histogram holds every request, and the maximum is one of them.
    assert sum(groups["other"]["buckets"]) == 3
    assert 0 < groups["other"]["latency_max_ms"] <= groups["other"]["latency_sum_ms"]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__, METRICS_ROUTE_GROUPS=PROBE_GROUPS)
def test_it_records_a_failing_view_as_a_5xx_error():
    client = Client(raise_request_exception=False)

    assert client.get("/probe/fail").status_code == 500

    probe = recorder.take()[2]["probe"]
    assert (probe["count"], probe["errors"], probe["status"]) == (1, 1, {"5xx": 1})


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__, METRICS_ROUTE_GROUPS=PROBE_GROUPS)
def test_it_counts_the_sql_queries_a_request_runs(django_assert_num_queries):
    with django_assert_num_queries(3):
        assert Client().get("/probe/sql/3").json() == {"ran": 3}

    probe = recorder.take()[2]["probe"]
    assert (probe["count"], probe["sql"]) == (1, 3)


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF=__name__, METRICS_ROUTE_GROUPS=PROBE_GROUPS)
def test_it_counts_queries_run_in_a_worker_thread(django_assert_num_queries):
    # None of the four queries runs on this thread's connection...
    with django_assert_num_queries(0):
        assert Client().get("/probe/sql-in-worker/4").json() == {"ran": 4}

    # ...yet all four are counted against the request that caused them.
    assert len(worker_threads) == 1
    assert worker_threads[0] != threading.get_ident()
    probe = recorder.take()[2]["probe"]
    assert (probe["count"], probe["sql"], probe["status"]) == (1, 4, {"2xx": 1})


async def get_through_asgi(*paths: str) -> list[int]:
    """GET each path through the ASGI handler (the async middleware path daphne runs)."""
    client = AsyncClient()
    try:
        return [(await client.get(p)).status_code for p in paths]
    finally:
        # Sync views ran on asgiref's single thread-sensitive executor: close its connection.
        await sync_to_async(connections.close_all)()


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF=__name__, METRICS_ROUTE_GROUPS=PROBE_GROUPS)
def test_it_counts_queries_under_asgi_from_sync_views_and_worker_threads():
    statuses = asyncio.run(get_through_asgi("/probe/sql/2", "/probe/sql-in-worker/5"))

    assert statuses == [200, 200]
    assert len(worker_threads) == 1
    probe = recorder.take()[2]["probe"]
    assert (probe["count"], probe["sql"], probe["status"]) == (2, 7, {"2xx": 2})


SPLIT_GROUPS = [("/probe/sql-in-worker/1", "one"), ("/probe/sql-in-worker/6", "six")]


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF=__name__, METRICS_ROUTE_GROUPS=SPLIT_GROUPS)
def test_it_keeps_concurrent_requests_queries_apart():
    async def both() -> list[int]:
        client = AsyncClient()
        try:
            responses = await asyncio.gather(
                client.get("/probe/sql-in-worker/1"), client.get("/probe/sql-in-worker/6")
            )
            return [r.status_code for r in responses]
        finally:
            await sync_to_async(connections.close_all)()

    assert asyncio.run(both()) == [200, 200]

    groups = recorder.take()[2]
    assert {name: (g["count"], g["sql"]) for name, g in groups.items()} == {
        "one": (1, 1),
        "six": (1, 6),
    }
