"""The alert rules' measures, judged on hand-built samples: what each rule reads, the guards that
keep an idle deployment quiet, and Redis rules staying quiet while caching is off."""

import pytest
from django.test import override_settings

from monitoring.alerts.rules import (
    Rule,
    Sample,
    average_response_ms,
    default_rules,
    error_rate,
    hit_rate,
    redis_down,
    redis_memory,
)
from monitoring.metrics.aggregate import empty_cache, summarize
from monitoring.metrics.recorder import empty_group

CONNECTED = {"configured": True, "connected": True, "memory_ratio": 0.5}
DOWN = {"configured": True, "connected": False, "error": "ConnectionError: refused"}


@pytest.fixture(autouse=True)
def runbook_thresholds():
    """The runbook's defaults, whatever the environment running the tests says."""
    with override_settings(
        ALERT_HIT_RATE_CRITICAL=0.30,
        ALERT_HIT_RATE_WARNING=0.60,
        ALERT_HIT_RATE_MIN_LOOKUPS=100,
        ALERT_RESPONSE_MS_CRITICAL=150.0,
        ALERT_RESPONSE_MS_WARNING=100.0,
        ALERT_ERROR_RATE_CRITICAL=0.05,
        ALERT_MIN_REQUESTS=20,
        ALERT_REDIS_MEMORY_WARNING=0.80,
        ALERT_FOR_SECONDS=60,
        ALERT_REDIS_DOWN_FOR_SECONDS=2,
    ):
        yield


def figures(requests: int = 0, avg_ms: float = 0.0, errors: int = 0, hits=0, misses=0) -> dict:
    """A period's aggregate, built the way `aggregate()` builds it from stored windows."""
    group = empty_group()
    group.update(count=requests, errors=errors, latency_sum_ms=avg_ms * requests)
    cache = empty_cache() | {"hits": hits, "misses": misses}
    return summarize({"dashboard": group}, {"leads": cache}, {}, 60, ["test:1"])


def sample(caching: bool = True, redis: dict | None = None, **period) -> Sample:
    period_figures = figures(**period)
    return Sample(
        caching_enabled=caching,
        redis=CONNECTED if redis is None else redis,
        minute=period_figures,
        five_minutes=period_figures,
    )


def rules_by_name() -> dict[str, Rule]:
    return {rule.name: rule for rule in default_rules()}


def breaching(s: Sample) -> list[str]:
    return [rule.name for rule in default_rules() if rule.breaching(rule.measure(s))]


def test_it_measures_redis_down_as_one_and_up_as_zero():
    assert redis_down(sample(redis=DOWN)) == 1.0
    assert redis_down(sample(redis=CONNECTED)) == 0.0
    assert breaching(sample(redis=DOWN)) == ["redis_connection_lost"]


def test_it_keeps_redis_rules_quiet_while_caching_is_switched_off():
    off = sample(caching=False, redis={"configured": True})
    assert redis_down(off) is None
    assert redis_memory(off) is None
    assert hit_rate(sample(caching=False, hits=0, misses=500)) is None
    assert breaching(sample(caching=False, redis={"configured": True}, hits=0, misses=500)) == []


def test_it_keeps_redis_rules_quiet_without_a_configured_redis():
    unconfigured = sample(caching=True, redis={"configured": False, "connected": False})
    assert redis_down(unconfigured) is None
    assert redis_memory(unconfigured) is None
    assert breaching(unconfigured) == []


def test_it_measures_the_five_minute_hit_rate():
    assert hit_rate(sample(hits=20, misses=80)) == 0.2
    assert breaching(sample(hits=20, misses=80)) == [
        "cache_hit_rate_critical",
        "cache_hit_rate_low",
    ]
    assert breaching(sample(hits=50, misses=50)) == ["cache_hit_rate_low"]
    assert breaching(sample(hits=70, misses=30)) == []


def test_it_reads_the_hit_rate_from_five_minutes_not_the_last_minute():
    s = Sample(
        caching_enabled=True,
        redis=CONNECTED,
        minute=figures(hits=0, misses=200),
        five_minutes=figures(hits=900, misses=100),
    )
    assert hit_rate(s) == 0.9


def test_it_ignores_the_hit_rate_below_the_minimum_number_of_lookups():
    assert hit_rate(sample(hits=0, misses=99)) is None
    assert hit_rate(sample(hits=0, misses=100)) == 0.0
    with override_settings(ALERT_HIT_RATE_MIN_LOOKUPS=10):
        assert hit_rate(sample(hits=1, misses=9)) == 0.1


def test_it_measures_the_last_minutes_average_response_time():
    assert average_response_ms(sample(requests=40, avg_ms=160.0)) == 160.0
    assert breaching(sample(requests=40, avg_ms=160.0)) == [
        "response_time_critical",
        "response_time_high",
    ]
    assert breaching(sample(requests=40, avg_ms=120.0)) == ["response_time_high"]
    assert breaching(sample(requests=40, avg_ms=100.0)) == []


def test_it_measures_the_last_minutes_error_rate():
    assert error_rate(sample(requests=100, avg_ms=10.0, errors=6)) == 0.06
    assert breaching(sample(requests=100, avg_ms=10.0, errors=6)) == ["error_rate_critical"]
    assert breaching(sample(requests=100, avg_ms=10.0, errors=5)) == []


def test_it_ignores_request_figures_below_the_minimum_number_of_requests():
    slow_and_failing = sample(requests=19, avg_ms=900.0, errors=19)
    assert average_response_ms(slow_and_failing) is None
    assert error_rate(slow_and_failing) is None
    assert breaching(slow_and_failing) == []
    assert average_response_ms(sample(requests=20, avg_ms=900.0)) == 900.0


def test_it_judges_request_figures_whether_or_not_caching_is_on():
    s = sample(caching=False, redis={"configured": True}, requests=40, avg_ms=200.0, errors=4)
    assert breaching(s) == ["response_time_critical", "response_time_high", "error_rate_critical"]


def test_it_measures_redis_memory_against_maxmemory():
    assert redis_memory(sample(redis={**CONNECTED, "memory_ratio": 0.85})) == 0.85
    assert breaching(sample(redis={**CONNECTED, "memory_ratio": 0.85})) == ["redis_memory_high"]
    assert breaching(sample(redis={**CONNECTED, "memory_ratio": 0.80})) == []


def test_it_has_no_memory_figure_without_maxmemory_or_connection():
    assert redis_memory(sample(redis={**CONNECTED, "memory_ratio": None})) is None
    assert redis_memory(sample(redis={**DOWN, "memory_ratio": 0.99})) is None


def test_it_is_quiet_on_an_idle_healthy_deployment():
    assert [rule.measure(sample()) for rule in default_rules()] == [
        0.0,
        None,
        None,
        None,
        None,
        None,
        0.5,
    ]
    assert breaching(sample()) == []


def test_it_takes_the_runbook_thresholds_severities_and_for_durations():
    rules = rules_by_name()
    table = {
        name: (
            r.severity,
            r.threshold,
            r.above,
            r.for_seconds,
            r.summary.format(threshold=r.threshold),
        )
        for name, r in rules.items()
    }
    assert table == {
        "redis_connection_lost": ("critical", 0.5, True, 2, "Redis connection lost"),
        "cache_hit_rate_critical": ("critical", 0.30, False, 60, "Cache hit rate below 30%"),
        "cache_hit_rate_low": ("warning", 0.60, False, 60, "Cache hit rate below 60%"),
        "response_time_critical": (
            "critical",
            150.0,
            True,
            60,
            "Average response time above 150 ms",
        ),
        "response_time_high": ("warning", 100.0, True, 60, "Average response time above 100 ms"),
        "error_rate_critical": ("critical", 0.05, True, 60, "Error rate above 5%"),
        "redis_memory_high": ("warning", 0.80, True, 60, "Redis memory above 80% of maxmemory"),
    }


def test_it_clears_each_rule_past_its_threshold_for_hysteresis():
    clears = {name: rule.clear for name, rule in rules_by_name().items()}
    assert clears == {
        "redis_connection_lost": 0.5,
        "cache_hit_rate_critical": pytest.approx(0.35),
        "cache_hit_rate_low": pytest.approx(0.65),
        "response_time_critical": pytest.approx(135.0),
        "response_time_high": pytest.approx(90.0),
        "error_rate_critical": pytest.approx(0.04),
        "redis_memory_high": pytest.approx(0.75),
    }


def test_it_reads_thresholds_from_settings():
    with override_settings(
        ALERT_HIT_RATE_CRITICAL=0.25,
        ALERT_RESPONSE_MS_WARNING=80.0,
        ALERT_FOR_SECONDS=30,
        ALERT_REDIS_DOWN_FOR_SECONDS=0,
    ):
        rules = rules_by_name()
    critical = rules["cache_hit_rate_critical"]
    assert (critical.threshold, critical.clear) == (0.25, pytest.approx(0.30))
    assert critical.summary.format(threshold=critical.threshold) == "Cache hit rate below 25%"
    assert rules["response_time_high"].threshold == 80.0
    assert rules["response_time_high"].for_seconds == 30
    assert rules["redis_connection_lost"].for_seconds == 0


def test_it_breaches_strictly_past_the_threshold_and_clears_at_the_clear_value():
    above = Rule("a", "warning", "a", lambda s: None, 10.0, True, 8.0, 0)
    below = Rule("b", "warning", "b", lambda s: None, 0.3, False, 0.35, 0)
    assert [above.breaching(v) for v in (10.0, 10.1, None)] == [False, True, False]
    assert [above.cleared(v) for v in (8.1, 8.0, None)] == [False, True, True]
    assert [below.breaching(v) for v in (0.3, 0.29, None)] == [False, True, False]
    assert [below.cleared(v) for v in (0.34, 0.35, None)] == [False, True, True]
