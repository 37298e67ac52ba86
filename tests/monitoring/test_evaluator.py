"""One evaluator per deployment: the lease (acquire, renew, expiry, takeover) with the clock in the
test's hands, evaluators taking turns in one process, and evaluators racing in threads and in
real processes against the test database - one alert, one firing transition, one Slack message."""

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import OperationalError, connection
from django.test import override_settings
from django.utils import timezone

from monitoring import events
from monitoring.alerts import delivery, engine, evaluator, lease
from monitoring.alerts.evaluator import LEASE, Evaluator
from monitoring.alerts.rules import Rule, Sample
from monitoring.cache import switch
from monitoring.models import Alert, AlertTransition, Lease, Notification, NotificationDelivery
from tests.conftest import using_redis
from tests.monitoring.evaluator_support import evaluator_environment, wait_for
from tests.monitoring.test_switch import ROOT, UNREACHABLE_REDIS

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SAMPLE = Sample(caching_enabled=True, redis={}, minute={}, five_minutes={})
ROUNDS = 10


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def redis_lost():
    """Settings under which a round sees Redis down and fires at once; nobody is notified."""
    with (
        using_redis(UNREACHABLE_REDIS),
        override_settings(
            REDIS_ENABLED=None,
            ALERT_REDIS_DOWN_FOR_SECONDS=0,
            REDIS_ALERT_WEBHOOK_URL="",
            ALERT_EMAILS=[],
            MONITORING_LEASE_SECONDS=60,
        ),
    ):
        yield


# --- the lease ------------------------------------------------------------------------------


def test_it_grants_a_free_lease():
    assert lease.acquire("job", "a", 10, now=T0) is True
    row = Lease.objects.get()
    assert (row.name, row.holder, row.expires_at) == ("job", "a", at(10))


def test_it_refuses_a_live_lease_to_another_holder():
    lease.acquire("job", "a", 10, now=T0)
    assert lease.acquire("job", "b", 10, now=at(5)) is False
    assert lease.acquire("job", "b", 10, now=at(10)) is False  # lapses only after expires_at
    assert list(Lease.objects.values_list("holder", "expires_at")) == [("a", at(10))]


def test_it_renews_the_lease_for_its_holder():
    lease.acquire("job", "a", 10, now=T0)
    assert lease.acquire("job", "a", 10, now=at(8)) is True
    assert Lease.objects.get().expires_at == at(18)
    assert lease.acquire("job", "b", 10, now=at(12)) is False


def test_it_reports_the_current_holder_until_expiry():
    lease.acquire("job", "a", 10, now=T0)
    assert lease.current("job", now=at(10)).holder == "a"
    assert lease.current("job", now=at(10.001)) is None
    assert lease.current("other", now=T0) is None


def test_it_hands_a_lapsed_lease_to_the_next_holder():
    lease.acquire("job", "a", 10, now=T0)
    assert lease.acquire("job", "b", 10, now=at(10.001)) is True
    assert list(Lease.objects.values_list("holder", "expires_at")) == [("b", at(20.001))]
    assert lease.acquire("job", "a", 10, now=at(11)) is False  # the old holder is out


def test_it_keeps_leases_by_name_apart():
    assert lease.acquire("job", "a", 10, now=T0) is True
    assert lease.acquire("other", "b", 10, now=T0) is True
    assert dict(Lease.objects.values_list("name", "holder")) == {"job": "a", "other": "b"}


def test_it_releases_only_the_holders_lease():
    lease.acquire("job", "a", 10, now=T0)
    lease.release("job", "b")
    assert Lease.objects.count() == 1
    lease.release("job", "a")
    assert Lease.objects.count() == 0
    assert lease.acquire("job", "b", 10, now=at(1)) is True


# --- evaluators in one process ----------------------------------------------------------------


@pytest.fixture
def rounds(monkeypatch) -> list[str]:
    """Counts the evaluations (with who held the lease at the time)."""
    seen: list[str] = []

    def counted(now=None):
        seen.append(Lease.objects.get(name=LEASE).holder)
        return None, []

    monkeypatch.setattr(evaluator, "evaluate_once", counted)
    return seen


@override_settings(MONITORING_LEASE_SECONDS=60)
def test_it_lets_only_the_lease_holder_evaluate(rounds):
    a, b = Evaluator(holder="a"), Evaluator(holder="b")
    assert [a.round(), b.round(), a.round(), b.round()] == [True, False, True, False]
    before = timezone.now()
    assert a.round() is True
    after = timezone.now()
    assert rounds == ["a", "a", "a"]
    expires_at = Lease.objects.get(name=LEASE).expires_at  # renewed for MONITORING_LEASE_SECONDS
    assert before + timedelta(seconds=60) <= expires_at <= after + timedelta(seconds=60)


@override_settings(MONITORING_LEASE_SECONDS=60)
def test_it_hands_over_when_the_holder_stops(rounds):
    a, b = Evaluator(holder="a"), Evaluator(holder="b")
    assert a.round() is True
    a.stop()
    assert Lease.objects.count() == 0
    assert [b.round(), a.round()] == [True, False]
    assert rounds == ["a", "b"]


@override_settings(MONITORING_LEASE_SECONDS=60)
def test_it_takes_over_from_a_holder_whose_lease_lapsed(rounds):
    a, b = Evaluator(holder="a"), Evaluator(holder="b")
    assert a.round() is True
    # `a` died: nobody renews, and its lease runs out.
    Lease.objects.filter(name=LEASE).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert [b.round(), a.round()] == [True, False]
    assert rounds == ["a", "b"]


def test_it_skips_a_round_when_the_database_fails(monkeypatch):
    def unreachable(now=None):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(evaluator, "evaluate_once", unreachable)
    assert Evaluator(holder="a").round() is False


def test_it_evaluates_for_real_only_in_the_holder(redis_lost):
    a, b = Evaluator(holder="a"), Evaluator(holder="b")
    assert [a.round(), b.round(), a.round(), b.round()] == [True, False, True, False]
    alert = Alert.objects.get()
    assert (alert.rule, alert.state, alert.value) == ("redis_connection_lost", "firing", 1.0)
    assert list(alert.transitions.values_list("from_state", "to_state")) == [
        ("", "pending"),
        ("pending", "firing"),
    ]


def test_it_stays_quiet_while_caching_is_switched_off(redis_lost):
    switch.set_caching(False, actor="ops", reason="planned Redis maintenance", source="cli")
    sample, transitions = evaluator.evaluate_once()
    assert (sample.caching_enabled, sample.redis) == (False, {"configured": True})
    assert transitions == []
    assert Alert.objects.count() == 0


def test_it_resolves_the_redis_alert_when_caching_is_switched_off(redis_lost):
    evaluator.evaluate_once()
    switch.set_caching(
        False, actor="ops", reason="Redis is gone, serve from the database", source="cli"
    )
    _, transitions = evaluator.evaluate_once()
    assert [(t.alert.rule, t.from_state, t.to_state) for t in transitions] == [
        ("redis_connection_lost", "firing", "resolved")
    ]


def test_it_pushes_transitions_and_a_snapshot_to_the_dashboards(redis_lost):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.DASHBOARD_GROUP, channel)
    try:
        evaluator.evaluate_once()
        received = [async_to_sync(layer.receive)(channel) for _ in range(3)]
    finally:
        async_to_sync(layer.group_discard)(events.DASHBOARD_GROUP, channel)
    assert [m["event"] for m in received] == [
        "alert.transition",
        "alert.transition",
        "monitoring.snapshot",
    ]
    alert = Alert.objects.get()
    assert received[1]["payload"] == {
        "id": alert.id,
        "rule": "redis_connection_lost",
        "severity": "critical",
        "summary": "Redis connection lost",
        "from": "pending",
        "to": "firing",
        "value": 1.0,
    }
    assert received[2]["payload"]["redis"]["connected"] is False


# --- evaluators racing ----------------------------------------------------------------------


def race(rule: Rule, threads: int, now: datetime) -> list[list[engine.Transition]]:
    """`threads` threads evaluating `rule` at once, each on its own connection."""
    results: list[list[engine.Transition]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(engine.evaluate([rule], SAMPLE, now))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert errors == []
    assert len(results) == threads
    return results


def test_it_opens_and_resolves_one_alert_when_threads_race(postgres):
    threads = 8
    barrier = threading.Barrier(threads)
    value = {"now": 1.0}

    def measure(sample: Sample) -> float:
        barrier.wait(10)  # every thread reaches the database at the same moment
        return value["now"]

    rule = Rule("race", "critical", "Race", measure, 0.5, True, 0.5, 0)
    opened = race(rule, threads, T0)
    moves = [(t.from_state, t.to_state) for result in opened for t in result]
    assert moves == [("", "pending"), ("pending", "firing")]
    assert sorted(len(result) for result in opened) == [0] * (threads - 1) + [2]

    value["now"] = 0.0
    resolved = race(rule, threads, at(10))
    assert [(t.from_state, t.to_state) for result in resolved for t in result] == [
        ("firing", "resolved")
    ]
    assert list(Alert.objects.values_list("rule", "state")) == [("race", "resolved")]
    assert AlertTransition.objects.count() == 3


def test_it_notifies_once_when_two_evaluator_processes_race(slack_catcher):
    switch.read_state()  # the switch row exists (caching on) before either process starts
    env = evaluator_environment(
        REDIS_ALERT_WEBHOOK_URL=slack_catcher.url, MONITORING_LEASE_SECONDS="60"
    )
    racers = {
        holder: subprocess.Popen(
            [sys.executable, "-m", "tests.monitoring.evaluator_racer", holder, str(ROUNDS)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for holder in ("a", "b")
    }
    try:
        for racer in racers.values():
            assert racer.stdout.readline().strip() == "ready"
        for racer in racers.values():
            racer.stdin.write("go\n")
            racer.stdin.flush()
        outputs = {holder: racer.communicate(timeout=120) for holder, racer in racers.items()}
    finally:
        for racer in racers.values():
            racer.kill()
            racer.wait(10)
    for holder, (_, err) in outputs.items():
        assert racers[holder].returncode == 0, err
    active = {holder: int(out.split()[-1]) for holder, (out, _) in outputs.items()}
    [winner] = [holder for holder, n in active.items() if n]
    [loser] = {"a", "b"} - {winner}
    assert active[loser] == 0
    if settings.DATABASE_IS_POSTGRES:
        assert active[winner] == ROUNDS
    else:
        # SQLite answers "database is locked" at once when a transaction that has read tries to
        # write while the other process writes (its lease attempt): that round is skipped.
        assert 1 <= active[winner] <= ROUNDS
    assert Lease.objects.get(name=LEASE).holder == winner

    alert = Alert.objects.get()
    assert (alert.rule, alert.state) == ("redis_connection_lost", "firing")
    assert list(alert.transitions.values_list("from_state", "to_state")) == [
        ("", "pending"),
        ("pending", "firing"),
    ]
    # Exactly one message was written (with the firing transition); the worker sends it.
    assert list(Notification.objects.values_list("channel", "event", "status")) == [
        ("slack", "firing", "pending")
    ]
    with override_settings(REDIS_ALERT_WEBHOOK_URL=slack_catcher.url):
        assert delivery.deliver_due() == 1
    assert len(slack_catcher.posts) == 1
    [post] = slack_catcher.posts
    assert post["path"] == "/services/T000/B000/XXXX"
    assert post["payload"]["text"].startswith(":red_circle: CRITICAL Redis connection lost\n")
    assert list(NotificationDelivery.objects.values_list("channel", "event", "status")) == [
        ("slack", "firing", "sent")
    ]


def test_it_takes_over_from_a_killed_evaluator_process(redis_lost):
    switch.read_state()
    monitor = subprocess.Popen(
        [sys.executable, "manage.py", "monitor"],
        cwd=ROOT,
        env=evaluator_environment(MONITORING_EVALUATE_SECONDS="0.1", MONITORING_LEASE_SECONDS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert monitor.stdout.readline().startswith("evaluator ")
        holder = wait_for(lambda: Lease.objects.filter(name=LEASE).first(), process=monitor)
        os.kill(monitor.pid, signal.SIGKILL)
        monitor.wait(10)
    finally:
        monitor.kill()
        monitor.wait(10)
    assert holder.holder.endswith(f":{monitor.pid}")
    dead = Lease.objects.get(name=LEASE)  # never released: the process had no chance
    assert dead.holder == holder.holder
    # Exactly when the dead holder's lease lapses, another evaluator may take over.
    assert lease.acquire(LEASE, "b", 1, now=dead.expires_at) is False
    assert lease.acquire(LEASE, "b", 1, now=dead.expires_at + timedelta(microseconds=1)) is True
    Lease.objects.filter(name=LEASE).update(holder=dead.holder, expires_at=dead.expires_at)
    with override_settings(MONITORING_LEASE_SECONDS=1):
        successor = Evaluator(holder="b")
        assert wait_for(successor.round) is True
    assert Lease.objects.get(name=LEASE).holder == "b"
