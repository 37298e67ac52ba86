"""GET /metrics: Prometheus' text format, with the requests served by route group and status,
cumulative latency histograms, cache counters by namespace, the switch and the open alerts;
counters that survive the pruning of old windows, label values escaped, OpenMetrics on demand."""

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from monitoring.cache import gate
from monitoring.metrics import store
from monitoring.metrics.recorder import LATENCY_BUCKETS_MS, recorder
from monitoring.models import Alert, MetricBaseline, MetricWindow
from tests.conftest import turn_caching
from tests.monitoring.metrics_support import TOKEN, bearer, reset_metrics

pytestmark = pytest.mark.django_db

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(
    rf"^(?P<name>{NAME})(?:\{{(?P<labels>{LABEL}(?:,{LABEL})*)\}})? (?P<value>\S+)$"
)
COMMENT = re.compile(rf"^# (?:HELP {NAME} .+|TYPE {NAME} (?:counter|gauge|histogram|summary))$")
LE = [f"{bound / 1000:g}" for bound in LATENCY_BUCKETS_MS] + ["+Inf"]


@pytest.fixture(autouse=True)
def fresh_window():
    reset_metrics()
    with override_settings(MONITORING_TOKEN=TOKEN):
        yield
    reset_metrics()


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line; fails on any line that is not valid."""
    assert text.endswith("\n")
    samples = []
    for line in text.splitlines():
        if line.startswith("#"):
            assert COMMENT.match(line), line
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', match["labels"] or ""))
        samples.append((match["name"], labels, float(match["value"])))
    return samples


COUNTERS = (
    "opsdash_requests_total",
    "opsdash_request_duration_seconds_bucket",
    "opsdash_request_duration_seconds_count",
    "opsdash_request_duration_seconds_sum",
    "opsdash_cache_operations_total",
    "opsdash_cache_redis_calls_total",
    "opsdash_cache_redis_seconds_total",
)


def counter_samples(text: str) -> dict[tuple, float]:
    """Every counter sample by (name, labels), read by the library's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in COUNTERS
    }


def values(samples, name: str, **labels: str) -> list[float]:
    return [v for n, lbls, v in samples if n == name and labels.items() <= lbls.items()]


def scrape() -> tuple[str, list]:
    response = Client().get("/metrics", headers=bearer())
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.content.decode()
    return text, parse(text)


def serve_some_requests() -> None:
    client = Client()
    for _ in range(2):
        assert client.get("/no-such-page").status_code == 404
    for _ in range(3):
        assert client.get("/webhooks/twilio/sms").status_code == 405
    assert client.get("/api/monitoring/health/live").status_code == 200


def test_it_counts_requests_by_route_group_and_status():
    serve_some_requests()
    store.flush()

    text, samples = scrape()

    assert "# TYPE opsdash_requests_total counter" in text.splitlines()
    requests = {
        (labels["group"], labels["status"]): v
        for name, labels, v in samples
        if name == "opsdash_requests_total"
    }
    assert requests == {
        ("other", "4xx"): 2,
        ("webhook_sms", "4xx"): 3,
        ("monitoring_api", "2xx"): 1,
    }


def test_it_writes_cumulative_histograms_ending_in_the_count():
    serve_some_requests()
    store.flush()

    text, samples = scrape()

    assert "# TYPE opsdash_request_duration_seconds histogram" in text.splitlines()
    for group, count in (("other", 2), ("webhook_sms", 3), ("monitoring_api", 1)):
        buckets = [
            (labels["le"], v)
            for name, labels, v in samples
            if name == "opsdash_request_duration_seconds_bucket" and labels["group"] == group
        ]
        assert [le for le, _ in buckets] == LE
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{group}: buckets are not cumulative"
        assert counts[-1] == count
        assert values(samples, "opsdash_request_duration_seconds_count", group=group) == [count]
        assert len(values(samples, "opsdash_request_duration_seconds_sum", group=group)) == 1


def test_it_writes_the_histogram_from_known_latencies():
    recorder.record("dashboard", 200, 0.001, 0)  # le 0.001
    recorder.record("dashboard", 200, 0.0625, 0)  # le 0.1
    recorder.record("dashboard", 200, 8.0, 0)  # only +Inf
    store.flush()

    _, samples = scrape()

    buckets = {
        labels["le"]: v
        for name, labels, v in samples
        if name == "opsdash_request_duration_seconds_bucket" and labels["group"] == "dashboard"
    }
    assert (buckets["0.001"], buckets["0.05"], buckets["0.1"], buckets["5"]) == (1, 1, 2, 2)
    assert buckets["+Inf"] == 3


def test_it_counts_cache_operations_by_namespace():
    gate.stats.count("leads", "hits", 4)
    gate.stats.count("leads", "misses")
    gate.stats.count("conversations", "errors", 2)
    gate.stats.count("conversations", "bypassed", 5)
    store.flush()

    text, samples = scrape()

    assert "# TYPE opsdash_cache_operations_total counter" in text.splitlines()
    operations = {
        (labels["namespace"], labels["outcome"]): v
        for name, labels, v in samples
        if name == "opsdash_cache_operations_total"
    }
    assert operations == {
        ("leads", "hits"): 4,
        ("leads", "misses"): 1,
        ("leads", "errors"): 0,
        ("leads", "bypassed"): 0,
        ("conversations", "hits"): 0,
        ("conversations", "misses"): 0,
        ("conversations", "errors"): 2,
        ("conversations", "bypassed"): 5,
    }


@pytest.mark.django_db(transaction=True)
def test_it_shows_caching_on_and_redis_up(shared_redis):
    _, samples = scrape()

    assert values(samples, "opsdash_cache_enabled", source="runtime") == [1]
    assert values(samples, "opsdash_redis_up") == [1]
    assert values(samples, "opsdash_breaker_open", state="closed") == [0]
    assert len(values(samples, "opsdash_redis_ping_seconds")) == 1
    assert values(samples, "opsdash_redis_memory_bytes", kind="used")[0] > 0


@pytest.mark.django_db(transaction=True)
def test_it_shows_caching_switched_off(shared_redis):
    turn_caching(False)

    _, samples = scrape()

    assert values(samples, "opsdash_cache_enabled", source="runtime") == [0]


def test_it_shows_caching_off_without_redis():
    with override_settings(REDIS_URL=None):
        _, samples = scrape()

    assert values(samples, "opsdash_cache_enabled", source="unconfigured") == [0]
    assert values(samples, "opsdash_redis_up") == [0]
    assert values(samples, "opsdash_redis_ping_seconds") == []


def test_it_counts_open_alerts_by_severity_and_state():
    started = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    for rule, severity, state in [
        ("redis_down", "critical", "firing"),
        ("error_rate", "critical", "firing"),
        ("hit_rate_warning", "warning", "pending"),
        ("response_time_warning", "warning", "resolved"),
    ]:
        Alert.objects.create(
            rule=rule,
            severity=severity,
            state=state,
            summary=rule,
            threshold=1.0,
            started_at=started,
        )

    text, samples = scrape()

    assert "# TYPE opsdash_alerts_active gauge" in text.splitlines()
    active = {
        (labels["severity"], labels["state"]): v
        for name, labels, v in samples
        if name == "opsdash_alerts_active"
    }
    assert active == {
        ("warning", "pending"): 1,
        ("warning", "firing"): 0,
        ("critical", "pending"): 0,
        ("critical", "firing"): 2,
    }


def test_it_declares_every_metric_family_once_before_its_samples():
    serve_some_requests()
    gate.stats.count("leads", "hits")
    store.flush()

    text, _ = scrape()

    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in typed, f"{name} declared twice"
            typed[name] = kind
        elif not line.startswith("#"):
            name = SAMPLE.match(line)["name"]
            family = name if name in typed else re.sub(r"_(bucket|count|sum)$", "", name)
            assert family in typed, f"{name} sampled before its # TYPE line"
            if family != name:
                assert typed[family] == "histogram"


# --- counters across pruning ----------------------------------------------------------------


def record_traffic(latency: float) -> None:
    """Requests and cache figures with latencies that are no exact binary fractions."""
    recorder.record("webhook_sms", 200, latency, 1)
    recorder.record("webhook_sms", 503, latency * 3, 1)
    recorder.record("dashboard", 200, latency * 7, 2)
    gate.stats.count("leads", "hits", 5)
    gate.stats.count("leads", "misses")
    gate.stats.redis_call("leads", latency / 10)
    gate.stats.redis_call("ctx", latency / 30)


def flush_aged(hours: float) -> MetricWindow:
    """Flush what was recorded as a window that ended `hours` ago."""
    row = store.flush()
    ended = timezone.now() - timedelta(hours=hours)
    MetricWindow.objects.filter(pk=row.pk).update(started_at=ended, ended_at=ended)
    return row


@override_settings(METRICS_RETENTION_HOURS=2)
def test_it_keeps_every_counter_exactly_when_old_windows_are_pruned():
    for latency, hours in ((0.0123, 5), (0.0417, 3), (0.0071, 1)):
        record_traffic(latency)
        flush_aged(hours)
    before = counter_samples(scrape()[0])

    assert store.prune() == 2

    assert MetricWindow.objects.count() == 1
    after = counter_samples(scrape()[0])
    assert after == before
    assert after[("opsdash_requests_total", (("group", "webhook_sms"), ("status", "5xx")))] == 3
    # 86.1 + 291.9 + 49.7 ms, each window's sum kept in whole microseconds
    assert after[("opsdash_request_duration_seconds_sum", (("group", "dashboard"),))] == 0.4277
    hits = ("opsdash_cache_operations_total", (("namespace", "leads"), ("outcome", "hits")))
    assert after[hits] == 15
    assert store.prune() == 0
    assert counter_samples(scrape()[0]) == before


@pytest.mark.django_db(transaction=True)
@override_settings(METRICS_RETENTION_HOURS=2)
def test_it_counts_a_window_once_when_two_processes_prune_together():
    assert store.prune() == 0  # the baseline row exists: only its lock keeps the two apart
    for latency in (0.0123, 0.0417, 0.0071, 0.0333):
        record_traffic(latency)
        flush_aged(3)
    before = counter_samples(scrape()[0])
    start = threading.Barrier(2)
    deleted = []

    def prune_when_both_are_ready():
        try:
            start.wait()
            deleted.append(store.prune())
        finally:
            connection.close()

    threads = [threading.Thread(target=prune_when_both_are_ready) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(deleted) == [0, 4]
    assert MetricWindow.objects.count() == 0
    assert MetricBaseline.objects.count() == 1
    assert counter_samples(scrape()[0]) == before


# --- the library's format -------------------------------------------------------------------

HOSTILE = 'ops "night" \\ shift\nsecond line'


def test_it_escapes_hostile_label_values():
    recorder.record(HOSTILE, 200, 0.004, 0)
    gate.stats.count(HOSTILE, "hits", 2)
    store.flush()

    text, _ = scrape()  # every line still parses as one sample

    assert 'group="ops \\"night\\" \\\\ shift\\nsecond line",status="2xx"} 1.0' in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert [s.labels for s in families["opsdash_requests"].samples] == [
        {"group": HOSTILE, "status": "2xx"}
    ]
    hits = [
        s for s in families["opsdash_cache_operations"].samples if s.labels["outcome"] == "hits"
    ]
    assert [(s.labels["namespace"], s.value) for s in hits] == [(HOSTILE, 2)]


def test_it_answers_openmetrics_to_a_scraper_that_asks_for_it():
    serve_some_requests()
    store.flush()
    accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"

    response = Client().get("/metrics", headers=bearer() | {"Accept": accept})

    assert response.status_code == 200
    assert response["Content-Type"] == (
        "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
    )
    text = response.content.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    assert families["opsdash_requests"].type == "counter"
    served = {
        (s.labels["group"], s.labels["status"]): s.value
        for s in families["opsdash_requests"].samples
    }
    assert served == {("other", "4xx"): 2, ("webhook_sms", "4xx"): 3, ("monitoring_api", "2xx"): 1}
