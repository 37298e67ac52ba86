"""Windows in the database and the figures read from them: latency percentiles from bucket
counts, every process's windows merged (counts summed, never averaged), the period honoured,
flush and prune, and two real app processes adding up to one figure."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from monitoring import counters
from monitoring.cache import gate
from monitoring.identity import PROCESS_ID
from monitoring.metrics import store
from monitoring.metrics.aggregate import aggregate, percentile
from monitoring.metrics.recorder import LATENCY_BUCKETS_MS, recorder
from monitoring.models import MetricWindow
from tests.monitoring.metrics_support import ROOT, reset_metrics, subprocess_environment

CACHE_ZERO = {
    "hits": 0,
    "misses": 0,
    "errors": 0,
    "bypassed": 0,
    "stores": 0,
    "stale_stores_refused": 0,
    "invalidations": 0,
    "redis_calls": 0,
    "redis_seconds": 0.0,
    "redis_max_seconds": 0.0,
}


@pytest.fixture(autouse=True)
def fresh_window():
    reset_metrics()
    yield
    reset_metrics()


def buckets(**at_index: int) -> list[int]:
    """A bucket list, zero except at the given indexes (`i4=27` is 27 in bucket 4)."""
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for name, n in at_index.items():
        counts[int(name[1:])] = n
    return counts


def group(count, errors, status, latency_sum_ms, latency_max_ms, bucket_counts, sql) -> dict:
    return {
        "count": count,
        "errors": errors,
        "status": status,
        "latency_sum_ms": latency_sum_ms,
        "latency_max_ms": latency_max_ms,
        "buckets": bucket_counts,
        "sql": sql,
    }


def cache(**figures) -> dict:
    return {**CACHE_ZERO, **figures}


def window(process: str, seconds_ago: float, **data) -> MetricWindow:
    """A window row that ended `seconds_ago` and lasted five seconds."""
    ended = timezone.now() - timedelta(seconds=seconds_ago)
    return MetricWindow.objects.create(
        process=process,
        started_at=ended - timedelta(seconds=5),
        ended_at=ended,
        data={"requests": {}, "cache": {}, "counters": {}, **data},
    )


# --- percentiles ----------------------------------------------------------------------------


def test_it_interpolates_percentiles_within_a_bucket():
    # Five requests in (2, 5] ms and five in (5, 10] ms.
    counts = buckets(i2=5, i3=5)
    assert percentile(counts, 0.50) == 5.0
    assert percentile(counts, 0.95) == 9.5
    assert percentile(counts, 0.99) == 9.9


def test_it_interpolates_from_zero_in_the_first_bucket():
    counts = buckets(i0=4)
    assert [percentile(counts, f) for f in (0.5, 0.95, 0.99)] == [0.5, 0.95, 0.99]


def test_it_finds_the_tail_in_a_later_bucket():
    # 90 requests in (10, 20] ms, 10 in (150, 200] ms.
    counts = buckets(i4=90, i8=10)
    assert percentile(counts, 0.50) == 15.56
    assert percentile(counts, 0.95) == 175.0
    assert percentile(counts, 0.99) == 195.0


def test_it_doubles_the_last_bound_for_the_unbounded_bucket():
    assert percentile(buckets(i14=1), 0.5) == 7500.0


def test_it_has_no_percentile_without_requests():
    assert percentile(buckets(), 0.5) is None


# --- aggregate ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_merges_two_processes_into_one_figure():
    window(
        "web-a:101",
        10,
        requests={
            "webhook_sms": group(
                30, 3, {"2xx": 27, "5xx": 3}, 600.0, 180.0, buckets(i4=27, i8=3), 60
            )
        },
        cache={
            "leads": cache(
                hits=30, misses=10, redis_calls=40, redis_seconds=0.04, redis_max_seconds=0.003
            )
        },
        counters={"webhook.duplicate": 2},
    )
    window(
        "web-b:202",
        20,
        requests={
            "webhook_sms": group(
                10, 1, {"2xx": 9, "5xx": 1}, 400.0, 250.0, buckets(i4=9, i9=1), 10
            ),
            "dashboard": group(5, 0, {"2xx": 5}, 50.0, 20.0, buckets(i3=4, i4=1), 15),
        },
        cache={
            "leads": cache(
                hits=5, misses=15, redis_calls=20, redis_seconds=0.08, redis_max_seconds=0.009
            ),
            "conversations": cache(hits=6),
        },
        counters={"webhook.duplicate": 3, "webhook.fallback": 1},
    )

    figures = aggregate(60)

    assert figures["window_seconds"] == 60
    assert figures["processes"] == ["web-a:101", "web-b:202"]
    sms = figures["route_groups"]["webhook_sms"]
    assert {k: sms[k] for k in ("requests", "errors", "error_rate", "status")} == {
        "requests": 40,
        "errors": 4,
        "error_rate": 0.1,
        "status": {"2xx": 36, "5xx": 4},
    }
    assert sms["requests_per_second"] == 0.667  # 40 requests over the 60 s period
    assert sms["avg_ms"] == 25.0  # (600 + 400) / 40, not the mean of 20 and 40
    assert sms["max_ms"] == 250.0
    assert sms["sql_per_request"] == 1.75
    assert sms["histogram"]["counts"] == buckets(i4=36, i8=3, i9=1)
    # p99 interpolates to 260 ms in the (200, 300] bucket, but no request took over 250 ms.
    assert (sms["p50_ms"], sms["p95_ms"], sms["p99_ms"]) == (15.56, 183.33, 250.0)
    overall = figures["overall"]
    assert (overall["requests"], overall["errors"], overall["requests_per_second"]) == (45, 4, 0.75)
    assert overall["status"] == {"2xx": 41, "5xx": 4}
    assert overall["avg_ms"] == 23.33  # 1050 / 45
    assert overall["sql_per_request"] == 1.889  # 85 / 45
    leads = figures["cache_namespaces"]["leads"]
    # 35 hits of 60 lookups, not the mean of the two processes' rates (0.75 and 0.25).
    assert (leads["hits"], leads["misses"], leads["lookups"], leads["hit_rate"]) == (
        35,
        25,
        60,
        0.5833,
    )
    assert (leads["redis_avg_ms"], leads["redis_max_ms"]) == (2.0, 9.0)
    assert figures["cache_namespaces"]["conversations"]["hit_rate"] == 1.0
    assert (figures["cache"]["hits"], figures["cache"]["lookups"]) == (41, 66)
    assert figures["cache"]["hit_rate"] == 0.6212
    assert figures["counters"] == {"webhook.duplicate": 5, "webhook.fallback": 1}


@pytest.mark.django_db
def test_it_never_reports_a_percentile_above_the_slowest_request():
    # Four requests of 62.5 ms: bucket (50, 100] interpolates p50 to 75 ms and p99 to 99.5 ms.
    window("web-a:101", 5, requests={"api": group(4, 0, {"2xx": 4}, 250.0, 62.5, buckets(i6=4), 0)})

    api = aggregate(60)["route_groups"]["api"]

    assert (api["p50_ms"], api["p95_ms"], api["p99_ms"], api["max_ms"]) == (62.5, 62.5, 62.5, 62.5)


@pytest.mark.django_db
def test_it_sums_every_window_of_a_process_in_the_period():
    for seconds_ago in (5, 15, 25):
        window(
            "web-a:101",
            seconds_ago,
            requests={"api": group(2, 0, {"2xx": 2}, 20.0, 10.0, buckets(i3=2), 2)},
        )

    figures = aggregate(60)

    assert figures["processes"] == ["web-a:101"]
    assert figures["overall"]["requests"] == 6
    assert figures["route_groups"]["api"]["histogram"]["counts"] == buckets(i3=6)


@pytest.mark.django_db
def test_it_leaves_out_windows_older_than_the_period():
    window("web-a:101", 10, requests={"api": group(3, 0, {"2xx": 3}, 30.0, 10.0, buckets(i3=3), 0)})
    window(
        "web-old:9",
        120,
        requests={"api": group(100, 50, {"5xx": 100}, 1e4, 200.0, buckets(i8=100), 0)},
    )

    minute, five_minutes = aggregate(60), aggregate(300)

    assert minute["processes"] == ["web-a:101"]
    assert (minute["overall"]["requests"], minute["overall"]["errors"]) == (3, 0)
    assert five_minutes["processes"] == ["web-a:101", "web-old:9"]
    assert (five_minutes["overall"]["requests"], five_minutes["overall"]["errors"]) == (103, 50)


@pytest.mark.django_db
def test_it_reports_empty_figures_for_an_idle_period():
    figures = aggregate(60)

    assert figures["processes"] == []
    assert figures["route_groups"] == {}
    assert figures["overall"]["requests"] == 0
    assert figures["overall"]["requests_per_second"] == 0.0
    assert (figures["overall"]["avg_ms"], figures["overall"]["p95_ms"]) == (None, None)
    assert (figures["cache"]["lookups"], figures["cache"]["hit_rate"]) == (0, None)


# --- flush and prune ------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_flushes_this_process_window_as_one_row():
    recorder.record("webhook_sms", 200, 0.0625, 3)
    recorder.record("webhook_sms", 502, 0.25, 1)
    gate.stats.count("leads", "hits", 3)
    gate.stats.count("leads", "misses")
    counters.increment("webhook.duplicate", 2)

    row = store.flush()

    assert MetricWindow.objects.count() == 1
    row = MetricWindow.objects.get(pk=row.pk)
    assert row.process == PROCESS_ID
    assert row.started_at <= row.ended_at
    sms = row.data["requests"]["webhook_sms"]
    assert (sms["count"], sms["errors"], sms["status"], sms["sql"]) == (
        2,
        1,
        {"2xx": 1, "5xx": 1},
        4,
    )
    assert (sms["latency_sum_ms"], sms["latency_max_ms"]) == (312.5, 250.0)
    assert list(row.data["cache"]) == ["leads"]
    leads = row.data["cache"]["leads"]
    assert {name: leads[name] for name in ("hits", "misses", "errors", "bypassed")} == {
        "hits": 3,
        "misses": 1,
        "errors": 0,
        "bypassed": 0,
    }
    assert row.data["counters"] == {"webhook.duplicate": 2}
    assert row.data["breaker"] == {"changes": [], "state": "closed"}
    # What was flushed is gone from the process: the next window starts from zero.
    assert store.flush() is None
    assert MetricWindow.objects.count() == 1


@pytest.mark.django_db
def test_it_flushes_breaker_changes():
    gate.breaker.record_failure(hard=True)

    row = MetricWindow.objects.get(pk=store.flush().pk)

    assert [change[1:] for change in row.data["breaker"]["changes"]] == [["closed", "open"]]
    assert row.data["breaker"]["state"] == "open"
    assert row.data["requests"] == {}


@pytest.mark.django_db
def test_it_writes_nothing_when_idle():
    assert store.flush() is None
    assert MetricWindow.objects.count() == 0


@pytest.mark.django_db
def test_it_reads_back_what_it_flushed():
    recorder.record("dashboard", 200, 0.004, 2)
    recorder.record("dashboard", 200, 0.004, 4)
    gate.stats.count("leads", "hits")
    store.flush()

    figures = aggregate(60)

    assert figures["processes"] == [PROCESS_ID]
    assert figures["route_groups"]["dashboard"]["requests"] == 2
    assert figures["route_groups"]["dashboard"]["sql_per_request"] == 3.0
    assert figures["cache"]["hit_rate"] == 1.0


@pytest.mark.django_db
@override_settings(METRICS_RETENTION_HOURS=2)
def test_it_prunes_only_windows_older_than_the_retention():
    hour = 3600
    expired = [window("web-a:1", 3 * hour), window("web-a:1", 2 * hour + 60)]
    kept = [window("web-a:1", 2 * hour - 60), window("web-a:1", 1)]

    assert store.prune() == len(expired)

    assert sorted(MetricWindow.objects.values_list("pk", flat=True)) == [w.pk for w in kept]


# --- two real processes ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_adds_two_app_processes_up_to_one_figure():
    counts = {"alpha": 7, "beta": 12}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.monitoring.metrics_process", name, str(n)],
            cwd=ROOT,
            env=subprocess_environment(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, n in counts.items()
    ]
    outputs = []
    for child in children:
        stdout, _ = child.communicate(timeout=60)
        assert child.returncode == 0, stdout
        outputs.append(stdout.split())

    names, process_ids, _ = zip(*outputs, strict=True)
    assert names == ("alpha", "beta")
    assert len(set(process_ids)) == 2
    assert MetricWindow.objects.count() == 2
    figures = aggregate(60)
    assert figures["processes"] == sorted(process_ids)
    assert figures["overall"]["requests"] == 7 + 12
    assert figures["route_groups"]["webhook_sms"]["requests"] == 7 + 12
    assert figures["route_groups"]["webhook_sms"]["sql_per_request"] == 2.0
    assert (figures["cache"]["hits"], figures["cache"]["lookups"]) == (19, 19)
    assert figures["cache"]["hit_rate"] == 1.0
