"""The alert rules (thresholds from the rollout runbook, configurable in settings)."""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings


@dataclass(frozen=True)
class Sample:
    """What the evaluator saw in one round."""

    caching_enabled: bool
    redis: dict
    minute: dict  # aggregates over the last 60 s
    five_minutes: dict  # aggregates over the last 5 min
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    summary: str
    measure: Callable[[Sample], float | None]  # None: nothing to judge (idle, switched off)
    threshold: float
    above: bool  # fires when the value is above the threshold (else below)
    clear: float  # resolves only once the value is back past this (hysteresis)
    for_seconds: int

    def breaching(self, value: float | None) -> bool:
        if value is None:
            return False
        return value > self.threshold if self.above else value < self.threshold

    def cleared(self, value: float | None) -> bool:
        if value is None:
            return True
        return value <= self.clear if self.above else value >= self.clear


def redis_down(sample: Sample) -> float | None:
    # Quiet while caching is deliberately off or no Redis is configured.
    if not sample.caching_enabled or not sample.redis.get("configured"):
        return None
    return 0.0 if sample.redis.get("connected") else 1.0


def hit_rate(sample: Sample) -> float | None:
    cache = sample.five_minutes["cache"]
    if not sample.caching_enabled or cache["lookups"] < settings.ALERT_HIT_RATE_MIN_LOOKUPS:
        return None  # a cold or idle cache is not an incident
    return cache["hit_rate"]


def average_response_ms(sample: Sample) -> float | None:
    overall = sample.minute["traffic"]
    if overall["requests"] < settings.ALERT_MIN_REQUESTS:
        return None
    return overall["avg_ms"]


def error_rate(sample: Sample) -> float | None:
    overall = sample.minute["traffic"]
    if overall["requests"] < settings.ALERT_MIN_REQUESTS:
        return None
    return overall["error_rate"]


def redis_memory(sample: Sample) -> float | None:
    if not sample.caching_enabled or not sample.redis.get("connected"):
        return None
    return sample.redis.get("memory_ratio")


def default_rules() -> list[Rule]:
    s = settings
    sustained = s.ALERT_FOR_SECONDS
    return [
        Rule(
            "redis_connection_lost",
            "critical",
            "Redis connection lost",
            redis_down,
            0.5,
            True,
            0.5,
            s.ALERT_REDIS_DOWN_FOR_SECONDS,
        ),
        Rule(
            "cache_hit_rate_critical",
            "critical",
            "Cache hit rate below {threshold:.0%}",
            hit_rate,
            s.ALERT_HIT_RATE_CRITICAL,
            False,
            s.ALERT_HIT_RATE_CRITICAL + 0.05,
            sustained,
        ),
        Rule(
            "cache_hit_rate_low",
            "warning",
            "Cache hit rate below {threshold:.0%}",
            hit_rate,
            s.ALERT_HIT_RATE_WARNING,
            False,
            s.ALERT_HIT_RATE_WARNING + 0.05,
            sustained,
        ),
        Rule(
            "response_time_critical",
            "critical",
            "Average response time above {threshold:.0f} ms",
            average_response_ms,
            s.ALERT_RESPONSE_MS_CRITICAL,
            True,
            s.ALERT_RESPONSE_MS_CRITICAL * 0.9,
            sustained,
        ),
        Rule(
            "response_time_high",
            "warning",
            "Average response time above {threshold:.0f} ms",
            average_response_ms,
            s.ALERT_RESPONSE_MS_WARNING,
            True,
            s.ALERT_RESPONSE_MS_WARNING * 0.9,
            sustained,
        ),
        Rule(
            "error_rate_critical",
            "critical",
            "Error rate above {threshold:.0%}",
            error_rate,
            s.ALERT_ERROR_RATE_CRITICAL,
            True,
            s.ALERT_ERROR_RATE_CRITICAL * 0.8,
            sustained,
        ),
        Rule(
            "redis_memory_high",
            "warning",
            "Redis memory above {threshold:.0%} of maxmemory",
            redis_memory,
            s.ALERT_REDIS_MEMORY_WARNING,
            True,
            s.ALERT_REDIS_MEMORY_WARNING - 0.05,
            sustained,
        ),
    ]
