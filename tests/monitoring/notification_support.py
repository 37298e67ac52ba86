"""Shared by the notification tests: the channels configured, a stand-in for Slack behind the
one HTTP seam (`monitoring.http.post_json`), and the Redis-down alert firing and resolving."""

from datetime import UTC, datetime, timedelta

from django.test import override_settings

from monitoring import http
from monitoring.alerts import delivery, engine
from monitoring.alerts.rules import Rule, Sample
from monitoring.models import NotificationDelivery

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
WEBHOOK = "https://hooks.slack.test/services/T000/B000/XXXX"
SAMPLE = Sample(caching_enabled=True, redis={}, minute={}, five_minutes={})


class SlackStub:
    """Stands in for `http.post_json`: records each call and answers from a script."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, dict, float]] = []

    def __call__(self, url: str, payload: dict, timeout: float) -> tuple[int, str]:
        self.calls.append((url, payload, timeout))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def channel_settings():
    """Slack and two e-mail addresses configured, three attempts 5 s apart at first."""
    return override_settings(
        REDIS_ALERT_WEBHOOK_URL=WEBHOOK,
        ALERT_EMAILS=["ops@example.com", "oncall@example.com"],
        DEFAULT_FROM_EMAIL="opsdash@example.com",
        PUBLIC_BASE_URL="https://ops.example.com",
        NOTIFICATION_RETRIES=3,
        NOTIFICATION_TIMEOUT=2.5,
        NOTIFICATION_BACKOFF_SECONDS=5.0,
    )


def slack(monkeypatch, *answers) -> SlackStub:
    stub = SlackStub(*answers)
    monkeypatch.setattr(http, "post_json", stub)
    return stub


def slack_only():
    return override_settings(ALERT_EMAILS=[])


def email_only():
    return override_settings(REDIS_ALERT_WEBHOOK_URL="")


class Lever:
    """A measure whose value the test sets (breaching the Redis rule until told otherwise)."""

    def __init__(self, value: float | None = 1.0) -> None:
        self.value = value

    def __call__(self, sample: Sample) -> float | None:
        return self.value


def redis_rule(lever: Lever, for_seconds: int = 0) -> Rule:
    return Rule(
        "redis_connection_lost",
        "critical",
        "Redis connection lost",
        lever,
        0.5,
        True,
        0.5,
        for_seconds,
    )


def fire(now: datetime = T0) -> engine.Transition:
    """The Redis-down alert firing at `now`: its pending->firing transition."""
    opened, fired = engine.evaluate([redis_rule(Lever())], SAMPLE, now)
    assert (opened.to_state, fired.to_state) == ("pending", "firing")
    return fired


def resolve(now: datetime = T0 + timedelta(minutes=5)) -> engine.Transition:
    [resolved] = engine.evaluate([redis_rule(Lever(0.0))], SAMPLE, now)
    assert resolved.to_state == "resolved"
    return resolved


def deliver(now: datetime | None = None) -> int:
    """One round of the delivery worker; by default far enough ahead that everything is due."""
    return delivery.deliver_due(now or datetime.now(UTC) + timedelta(days=1))


def deliver_all(rounds: int = 10) -> None:
    """Rounds, each a day further ahead, until the outbox holds nothing due (retries included)."""
    for day in range(1, rounds + 1):
        if not delivery.deliver_due(datetime.now(UTC) + timedelta(days=day)):
            return


def deliveries() -> list[tuple]:
    return list(
        NotificationDelivery.objects.order_by("id").values_list(
            "alert__rule", "channel", "event", "attempt", "status", "error"
        )
    )
