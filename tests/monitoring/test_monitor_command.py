"""`manage.py monitor`: one round with --once, waiting on another evaluator's lease, refusing to
run when monitoring is off, the long-running loop stopped by SIGTERM (lease released), and the
complete monitoring process: it sends its alerts' notifications, sees a flip made elsewhere,
and writes its Redis samples to the metric windows, while the app processes leave it to it."""

import signal
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from monitoring import runtime
from monitoring.alerts.evaluator import LEASE
from monitoring.cache import controls, switch
from monitoring.identity import PROCESS_ID
from monitoring.models import Alert, Lease, MetricWindow, Notification
from tests.conftest import using_redis
from tests.monitoring.evaluator_support import evaluator_environment, wait_for
from tests.monitoring.test_switch import ROOT, UNREACHABLE_REDIS

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def redis_lost():
    """A round sees Redis down with caching on and fires at once; nobody is notified."""
    with (
        using_redis(UNREACHABLE_REDIS),
        override_settings(
            REDIS_ENABLED=None,
            REDIS_MONITORING_ENABLED=True,
            ALERT_REDIS_DOWN_FOR_SECONDS=0,
            REDIS_ALERT_WEBHOOK_URL="",
            ALERT_EMAILS=[],
            MONITORING_LEASE_SECONDS=60,
        ),
    ):
        yield


def monitor(*args: str) -> str:
    out = StringIO()
    call_command("monitor", *args, stdout=out)
    return out.getvalue()


def test_it_evaluates_one_round_with_once():
    assert monitor("--once") == "evaluated\n"
    alert = Alert.objects.get()
    assert (alert.rule, alert.state) == ("redis_connection_lost", "firing")
    assert Lease.objects.get(name=LEASE).holder == PROCESS_ID


def test_it_renews_its_own_lease_on_the_next_round():
    assert monitor("--once") == "evaluated\n"
    assert monitor("--once") == "evaluated\n"
    assert Alert.objects.count() == 1
    assert Alert.objects.get().transitions.count() == 2


def test_it_waits_while_another_evaluator_holds_the_lease():
    until = timezone.now() + timedelta(seconds=30)
    Lease.objects.create(name=LEASE, holder="web-2:4242", expires_at=until)
    assert monitor("--once") == "another evaluator holds the lease\n"
    assert Alert.objects.count() == 0
    assert list(Lease.objects.values_list("holder", "expires_at")) == [("web-2:4242", until)]


def test_it_takes_a_lease_its_holder_let_lapse():
    Lease.objects.create(
        name=LEASE, holder="web-2:4242", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert monitor("--once") == "evaluated\n"
    assert Lease.objects.get(name=LEASE).holder == PROCESS_ID


def test_it_refuses_to_run_when_monitoring_is_turned_off():
    with (
        override_settings(REDIS_MONITORING_ENABLED=False),
        pytest.raises(
            CommandError, match="^REDIS_MONITORING_ENABLED=false: the evaluator is turned off$"
        ),
    ):
        monitor("--once")
    assert Lease.objects.count() == 0
    assert Alert.objects.count() == 0


def test_it_refuses_to_run_when_turned_off_in_the_environment():
    result = subprocess.run(
        [sys.executable, "manage.py", "monitor", "--once"],
        cwd=ROOT,
        env=evaluator_environment(REDIS_MONITORING_ENABLED="false"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "REDIS_MONITORING_ENABLED=false: the evaluator is turned off" in result.stderr
    assert Lease.objects.count() == 0


def test_it_runs_until_sigterm_and_then_releases_the_lease():
    switch.read_state()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "monitor"],
        cwd=ROOT,
        env=evaluator_environment(MONITORING_EVALUATE_SECONDS="0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        holder = f":{process.pid}"
        first = process.stdout.readline()
        assert first.startswith("evaluator ") and first.endswith(
            f"{holder} running (Ctrl-C stops)\n"
        )
        wait_for(lambda: Alert.objects.filter(state="firing").exists(), process=process)
        assert Lease.objects.get(name=LEASE).holder.endswith(holder)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait(10)
    assert process.returncode == 0, err
    assert out == "evaluator stopped\n"
    assert Lease.objects.count() == 0
    alert = Alert.objects.get()
    assert (alert.rule, alert.state) == ("redis_connection_lost", "firing")


def test_it_sends_what_is_due_in_its_once_round():
    with override_settings(REDIS_ALERT_WEBHOOK_URL="http://127.0.0.1:9/unanswered"):
        assert monitor("--once") == "evaluated\n1 notification attempted\n"
    [message] = Notification.objects.all()
    assert (message.channel, message.status, message.attempts) == ("slack", "pending", 1)
    assert message.last_error.startswith("no answer: ")


def test_it_is_a_complete_monitoring_process(slack_catcher):
    switch.read_state()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "monitor"],
        cwd=ROOT,
        env=evaluator_environment(
            # The app processes' setting: it leaves monitoring to this process.
            MONITORING_IN_APP="false",
            MONITORING_EVALUATE_SECONDS="0.1",
            NOTIFICATION_POLL_SECONDS="0.1",
            METRICS_FLUSH_SECONDS="0.2",
            SWITCH_REFRESH_SECONDS="0.2",
            REDIS_ALERT_WEBHOOK_URL=slack_catcher.url,
            PUBLIC_BASE_URL="https://ops.example.com",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().startswith("evaluator ")
        wait_for(lambda: slack_catcher.posts, process=process)
        alert = Alert.objects.get()
        fired = slack_catcher.posts[0]["payload"]["text"]
        assert fired.startswith(":red_circle: CRITICAL Redis connection lost\n")
        assert fired.endswith(f"\nhttps://ops.example.com/dashboard/alerts/{alert.id}/")
        # Caching turned off elsewhere: the monitor's switch view follows, the alert resolves.
        controls.flip(False, reason="rollback drill", source="command", actor="test")
        wait_for(lambda: len(slack_catcher.posts) == 2, process=process)
        resolved = slack_catcher.posts[1]["payload"]["text"]
        assert resolved.startswith(":large_green_circle: RESOLVED Redis connection lost\n")
        windows = wait_for(
            lambda: list(MetricWindow.objects.filter(process__endswith=f":{process.pid}")),
            process=process,
        )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait(10)
    assert process.returncode == 0, err
    assert Alert.objects.get().state == "resolved"
    assert list(Notification.objects.order_by("id").values_list("event", "status")) == [
        ("firing", "sent"),
        ("resolved", "sent"),
    ]
    samples = [
        w.data["server"]
        for w in MetricWindow.objects.filter(process=windows[0].process)
        if "server" in w.data
    ]
    assert samples and samples[0]["connected"] is False
    assert Lease.objects.count() == 0


def test_it_leaves_monitoring_out_of_an_app_process_that_gives_it_to_monitor():
    with override_settings(MONITORING_IN_APP=False):
        assert runtime.describe_monitoring() == "in `manage.py monitor` (MONITORING_IN_APP=false)"
        runtime._start_background(monitoring=False, role="app")
        names = sorted(worker.name for worker in runtime._running)
        runtime.stop()
    assert names == ["opsdash-metrics-flusher", "opsdash-switch-refresher"]
    runtime._start_background(monitoring=True, role="monitor")
    names = sorted(worker.name for worker in runtime._running)
    runtime.stop()
    assert names == [
        "opsdash-evaluator",
        "opsdash-metrics-flusher",
        "opsdash-notifications",
        "opsdash-switch-refresher",
    ]
    assert Lease.objects.count() == 0
