"""The alert lifecycle, stepped by hand: pending -> firing -> resolved with the `for` duration,
hysteresis, one open alert per rule (also in the database), history rows and acknowledgement."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction
from django.test import override_settings

from monitoring.alerts import engine
from monitoring.alerts.rules import Rule, Sample, default_rules
from monitoring.metrics.aggregate import empty_cache, summarize
from monitoring.metrics.recorder import empty_group
from monitoring.models import Alert, AlertTransition

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SAMPLE = Sample(caching_enabled=True, redis={}, minute={}, five_minutes={})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Dial:
    """A measure whose value the test sets."""

    def __init__(self) -> None:
        self.value: float | None = None

    def __call__(self, sample: Sample) -> float | None:
        return self.value


@pytest.fixture
def dial() -> Dial:
    return Dial()


def make_rule(dial: Dial, for_seconds: int = 60, name: str = "queue_depth") -> Rule:
    """Fires above 10, clears at 8 or less."""
    return Rule(
        name, "critical", "Queue deeper than {threshold:.0f}", dial, 10.0, True, 8.0, for_seconds
    )


def step(rule: Rule, dial: Dial, value: float | None, seconds: float) -> list[tuple]:
    dial.value = value
    return [
        (t.from_state, t.to_state, t.value) for t in engine.evaluate([rule], SAMPLE, at(seconds))
    ]


def history(rule_name: str = "queue_depth") -> list[tuple]:
    return list(
        AlertTransition.objects.filter(alert__rule=rule_name)
        .order_by("at", "id")
        .values_list("alert_id", "from_state", "to_state", "value", "at", "note")
    )


def test_it_does_nothing_while_the_value_is_fine(dial):
    rule = make_rule(dial)
    assert step(rule, dial, 5.0, 0) == []
    assert step(rule, dial, None, 1) == []
    assert step(rule, dial, 10.0, 2) == []  # at the threshold is not past it
    assert Alert.objects.count() == 0


def test_it_opens_a_pending_alert_when_the_value_breaches(dial):
    assert step(make_rule(dial), dial, 12.0, 0) == [("", "pending", 12.0)]
    alert = Alert.objects.get()
    assert (alert.rule, alert.severity, alert.state, alert.summary) == (
        "queue_depth",
        "critical",
        "pending",
        "Queue deeper than 10",
    )
    assert (alert.value, alert.threshold, alert.started_at, alert.fired_at) == (
        12.0,
        10.0,
        T0,
        None,
    )
    assert history() == [(alert.id, "", "pending", 12.0, T0, "")]


def test_it_stays_pending_without_a_transition_before_its_for_duration(dial):
    rule = make_rule(dial, for_seconds=60)
    step(rule, dial, 12.0, 0)
    assert step(rule, dial, 13.0, 30) == []
    assert step(rule, dial, 14.0, 59.999) == []
    alert = Alert.objects.get()
    assert (alert.state, alert.value, alert.fired_at) == ("pending", 14.0, None)
    assert AlertTransition.objects.count() == 1


def test_it_fires_once_the_for_duration_has_passed(dial):
    rule = make_rule(dial, for_seconds=60)
    step(rule, dial, 12.0, 0)
    assert step(rule, dial, 15.0, 60) == [("pending", "firing", 15.0)]
    alert = Alert.objects.get()
    assert (alert.state, alert.fired_at, alert.started_at, alert.value) == (
        "firing",
        at(60),
        T0,
        15.0,
    )
    assert [row[1:4] for row in history()] == [("", "pending", 12.0), ("pending", "firing", 15.0)]
    assert step(rule, dial, 16.0, 90) == []  # already firing: nothing new


def test_it_keeps_firing_while_the_value_hovers_between_threshold_and_clear(dial):
    rule = make_rule(dial, for_seconds=0)
    step(rule, dial, 12.0, 0)
    for n, value in enumerate([9.0, 10.5, 8.5, 11.0, 9.9], start=1):
        assert step(rule, dial, value, n * 10) == []
    alert = Alert.objects.get()
    assert (alert.state, alert.value, alert.resolved_at) == ("firing", 9.9, None)
    assert AlertTransition.objects.count() == 2


def test_it_resolves_once_the_value_is_back_past_clear_and_keeps_the_values(dial):
    rule = make_rule(dial, for_seconds=60)
    step(rule, dial, 12.0, 0)
    step(rule, dial, 13.0, 60)
    step(rule, dial, 9.0, 90)
    assert step(rule, dial, 8.0, 120) == [("firing", "resolved", 8.0)]
    alert = Alert.objects.get()
    assert (alert.state, alert.resolved_at, alert.fired_at, alert.value) == (
        "resolved",
        at(120),
        at(60),
        8.0,
    )
    assert history() == [
        (alert.id, "", "pending", 12.0, at(0), ""),
        (alert.id, "pending", "firing", 13.0, at(60), ""),
        (alert.id, "firing", "resolved", 8.0, at(120), ""),
    ]


def test_it_resolves_a_firing_alert_when_there_is_nothing_left_to_judge(dial):
    rule = make_rule(dial, for_seconds=0)
    step(rule, dial, 12.0, 0)
    assert step(rule, dial, None, 10) == [("firing", "resolved", None)]
    alert = Alert.objects.get()
    assert (alert.state, alert.value) == ("resolved", 12.0)  # last value seen is kept


def test_it_resolves_a_pending_that_clears_before_its_for_duration_without_notifying(dial):
    rule = make_rule(dial, for_seconds=60)
    step(rule, dial, 12.0, 0)
    dial.value = 7.0
    [transition] = engine.evaluate([rule], SAMPLE, at(20))
    assert (transition.from_state, transition.to_state, transition.value) == (
        "pending",
        "resolved",
        7.0,
    )
    assert transition.notifies is False
    alert = Alert.objects.get()
    assert (alert.state, alert.fired_at, alert.resolved_at) == ("resolved", None, at(20))
    assert history()[-1][1:] == (
        "pending",
        "resolved",
        7.0,
        at(20),
        "condition passed before its for duration",
    )


def test_it_tells_firing_and_resolving_a_fired_alert_but_not_opening_one(dial):
    rule = make_rule(dial, for_seconds=60)
    dial.value = 12.0
    [opened] = engine.evaluate([rule], SAMPLE, at(0))
    [fired] = engine.evaluate([rule], SAMPLE, at(60))
    dial.value = 1.0
    [resolved] = engine.evaluate([rule], SAMPLE, at(70))
    assert [opened.notifies, fired.notifies, resolved.notifies] == [False, True, True]


def test_it_opens_a_new_alert_when_the_value_breaches_again_after_resolving(dial):
    rule = make_rule(dial, for_seconds=0)
    step(rule, dial, 12.0, 0)
    step(rule, dial, 5.0, 10)
    assert step(rule, dial, 11.0, 20) == [("", "pending", 11.0), ("pending", "firing", 11.0)]
    first, second = Alert.objects.order_by("id")
    assert (first.state, first.resolved_at) == ("resolved", at(10))
    assert (second.state, second.started_at, second.fired_at) == ("firing", at(20), at(20))
    assert second.transitions.count() == 2
    assert first.transitions.count() == 3


def test_it_keeps_one_open_alert_per_rule_across_many_rounds(dial):
    rule = make_rule(dial, for_seconds=30)
    for n, value in enumerate([12.0, 11.0, 15.0, 9.0, 12.0, 30.0, 9.5, 10.5]):
        step(rule, dial, value, n * 10)
    assert Alert.objects.filter(state__in=["pending", "firing"]).count() == 1
    assert Alert.objects.count() == 1


def test_it_refuses_a_second_open_alert_for_a_rule_in_the_database():
    fields = {"rule": "queue_depth", "severity": "critical", "summary": "s", "threshold": 1.0}
    Alert.objects.create(state="pending", started_at=T0, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(state="pending", started_at=at(1), **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(state="firing", started_at=at(2), **fields)
    Alert.objects.create(state="resolved", started_at=at(3), **fields)
    Alert.objects.create(state="resolved", started_at=at(4), **fields)
    Alert.objects.create(state="pending", started_at=at(5), **{**fields, "rule": "other"})
    assert Alert.objects.count() == 4


def test_it_fires_at_once_with_a_zero_for_duration(dial):
    assert step(make_rule(dial, for_seconds=0), dial, 12.0, 0) == [
        ("", "pending", 12.0),
        ("pending", "firing", 12.0),
    ]
    alert = Alert.objects.get()
    assert (alert.state, alert.started_at, alert.fired_at) == ("firing", T0, T0)


def test_it_judges_rules_below_their_threshold(dial):
    rule = Rule("hits", "warning", "Hit rate below {threshold:.0%}", dial, 0.3, False, 0.35, 0)
    assert step(rule, dial, 0.2, 0) == [("", "pending", 0.2), ("pending", "firing", 0.2)]
    assert step(rule, dial, 0.34, 10) == []
    assert step(rule, dial, 0.35, 20) == [("firing", "resolved", 0.35)]
    assert Alert.objects.get().summary == "Hit rate below 30%"


def test_it_steps_every_rule_independently(dial):
    quick, slow = make_rule(dial, 0, name="quick"), make_rule(dial, 60, name="slow")
    dial.value = 12.0
    moves = engine.evaluate([quick, slow], SAMPLE, T0)
    assert [(t.alert.rule, t.from_state, t.to_state) for t in moves] == [
        ("quick", "", "pending"),
        ("quick", "pending", "firing"),
        ("slow", "", "pending"),
    ]
    assert dict(Alert.objects.values_list("rule", "state")) == {
        "quick": "firing",
        "slow": "pending",
    }


def test_it_acknowledges_with_who_when_and_a_note(dial):
    step(make_rule(dial, for_seconds=0), dial, 12.0, 0)
    alert = Alert.objects.get()
    returned = engine.acknowledge(alert.id, "ops@example.com", "looking into it", at(30))
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledged_at, alert.acknowledgement_note) == (
        "ops@example.com",
        at(30),
        "looking into it",
    )
    assert (returned.pk, returned.acknowledged_by) == (alert.pk, "ops@example.com")
    assert alert.state == "firing"  # acknowledging does not silence the lifecycle


def test_it_keeps_an_acknowledgement_note_to_500_characters(dial):
    step(make_rule(dial, for_seconds=0), dial, 12.0, 0)
    alert = Alert.objects.get()
    engine.acknowledge(alert.id, "ops", "x" * 600, at(1))
    alert.refresh_from_db()
    assert alert.acknowledgement_note == "x" * 500


def runbook_sample(redis: dict, requests: int = 0, avg_ms: float = 0.0) -> Sample:
    group = empty_group()
    group.update(count=requests, latency_sum_ms=avg_ms * requests)
    figures = summarize({"dashboard": group}, {"leads": empty_cache()}, {}, 60, [])
    return Sample(caching_enabled=True, redis=redis, minute=figures, five_minutes=figures)


@override_settings(ALERT_REDIS_DOWN_FOR_SECONDS=2, ALERT_FOR_SECONDS=60, ALERT_MIN_REQUESTS=20)
def test_it_runs_the_redis_down_rule_through_its_lifecycle():
    down = runbook_sample({"configured": True, "connected": False})
    up = runbook_sample({"configured": True, "connected": True, "memory_ratio": 0.1})
    moves = [
        [(t.alert.rule, t.to_state) for t in engine.evaluate(default_rules(), s, at(seconds))]
        for s, seconds in [(down, 0), (down, 1), (down, 2), (down, 4), (up, 6)]
    ]
    assert moves == [
        [("redis_connection_lost", "pending")],
        [],
        [("redis_connection_lost", "firing")],
        [],
        [("redis_connection_lost", "resolved")],
    ]
    alert = Alert.objects.get()
    assert (alert.severity, alert.summary, alert.fired_at) == (
        "critical",
        "Redis connection lost",
        at(2),
    )
    assert list(alert.transitions.values_list("value", flat=True)) == [1.0, 1.0, 0.0]


@override_settings(
    ALERT_FOR_SECONDS=60,
    ALERT_MIN_REQUESTS=20,
    ALERT_RESPONSE_MS_CRITICAL=150.0,
    ALERT_RESPONSE_MS_WARNING=100.0,
)
def test_it_opens_the_warning_and_the_critical_response_time_alerts_separately():
    up = {"configured": True, "connected": True, "memory_ratio": 0.1}

    def states_after(avg_ms: float, seconds: float) -> dict[str, str]:
        engine.evaluate(
            default_rules(), runbook_sample(up, requests=40, avg_ms=avg_ms), at(seconds)
        )
        return dict(Alert.objects.values_list("rule", "state"))

    assert states_after(160.0, 0) == {
        "response_time_critical": "pending",
        "response_time_high": "pending",
    }
    # 130 ms: under the critical rule's clear (135) but still over the warning threshold.
    assert states_after(130.0, 60) == {
        "response_time_critical": "resolved",
        "response_time_high": "firing",
    }
    # 95 ms: under the warning threshold, not yet under its clear (90): still firing.
    assert states_after(95.0, 90)["response_time_high"] == "firing"
    assert states_after(90.0, 120)["response_time_high"] == "resolved"
    assert Alert.objects.count() == 2


def test_it_restarts_the_for_clock_when_a_pending_value_dips_inside_the_threshold():
    rule = Rule("hover", "warning", "hover", lambda sample: sample.extra["v"], 10.0, True, 8.0, 60)
    t0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

    def at(seconds, value):
        sample = Sample(True, {}, {}, {}, {"v": value})
        return engine.evaluate([rule], sample, t0 + timedelta(seconds=seconds))

    at(0, 11.0)  # pending
    at(30, 9.0)  # inside the threshold, not clear: still pending, clock stopped
    assert [t.to_state for t in at(61, 11.0)] == []  # breaching again: a new 60 s starts
    assert [t.to_state for t in at(120, 11.0)] == []
    assert [t.to_state for t in at(121, 11.0)] == ["firing"]
