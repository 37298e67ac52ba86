"""GET /metrics: Prometheus' text format, with the requests served by route group and status,
cumulative latency histograms, cache counters by namespace, the switch and the open alerts."""

import re
from datetime import UTC, datetime

import pytest
from django.test import Client, override_settings

from monitoring.cache import gate
from monitoring.metrics import store
from monitoring.metrics.recorder import LATENCY_BUCKETS_MS, recorder
from monitoring.models import Alert
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
