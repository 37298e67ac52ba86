"""Automatic rollback (AUTO_ROLLBACK): caching turned off through the switch service by
`system` once a qualifying alert has fired long enough, every channel told, a banner on every
dashboard page with the way back; never while pinned or silenced, never turned on again by
itself; and the real thing: a served process whose Redis is killed rolls itself back."""

import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from monitoring.alerts import rollback
from monitoring.cache import controls, switch
from monitoring.models import Alert, CacheSwitch, Notification, Silence, SwitchAudit
from tests.conftest import using_redis
from tests.monitoring.notification_support import channel_settings, deliver_all, slack, slack_only
from tests.personas import flipper, signed_in, viewer

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def runtime_switch():
    """A runtime switch with caching on; Slack and e-mail configured; rollback after 30 s."""
    with (
        using_redis(UNREACHABLE_REDIS),
        channel_settings(),
        override_settings(REDIS_ENABLED=None, AUTO_ROLLBACK_AFTER_SECONDS=30),
    ):
        yield


def firing(rule="redis_connection_lost", severity="critical", seconds=31) -> Alert:
    fired = timezone.now() - timedelta(seconds=seconds)
    return Alert.objects.create(
        rule=rule,
        severity=severity,
        state="firing",
        summary={"redis_connection_lost": "Redis connection lost"}.get(rule, rule),
        value=1.0,
        threshold=0.5,
        started_at=fired,
        fired_at=fired,
    )


def caching_on() -> None:
    controls.flip(True, reason="start", source="cli", actor="test")


@pytest.mark.django_db
def test_it_turns_caching_off_as_system_and_tells_every_channel():
    caching_on()
    alert = firing()
    with override_settings(AUTO_ROLLBACK="redis_lost"):
        assert rollback.consider(timezone.now()) == alert
    state = switch.read_state()
    assert (state.enabled, state.changed_by) == (False, "system")
    audit = SwitchAudit.objects.first()
    assert (audit.actor, audit.source, audit.action, audit.old_enabled, audit.new_enabled) == (
        "system",
        "system",
        "disable",
        True,
        False,
    )
    assert audit.reason == (
        f"automatic rollback (AUTO_ROLLBACK=redis_lost): alert #{alert.pk} Redis connection lost "
        f"firing since {alert.fired_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    assert sorted(Notification.objects.values_list("channel", "event")) == [
        ("email", "rollback"),
        ("slack", "rollback"),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mode", "rule", "severity", "seconds", "rolls_back"),
    [
        ("off", "redis_connection_lost", "critical", 600, False),
        ("redis_lost", "redis_connection_lost", "critical", 29, False),
        ("redis_lost", "cache_hit_rate_critical", "critical", 600, False),
        ("critical", "cache_hit_rate_critical", "critical", 31, True),
        ("critical", "cache_hit_rate_warning", "warning", 600, False),
    ],
)
def test_it_rolls_back_only_for_what_its_mode_names_once_it_has_fired_long_enough(
    mode, rule, severity, seconds, rolls_back
):
    caching_on()
    firing(rule, severity, seconds)
    with override_settings(AUTO_ROLLBACK=mode):
        rollback.consider(timezone.now())
    assert switch.read_state().enabled is not rolls_back
    assert SwitchAudit.objects.filter(actor="system").count() == int(rolls_back)


@pytest.mark.django_db
def test_it_does_nothing_while_a_silence_covers_the_alert():
    caching_on()
    firing()
    now = timezone.now()
    Silence.objects.create(
        rule="redis_connection_lost",
        reason="Redis maintenance",
        owner="olivia",
        starts_at=now - timedelta(minutes=5),
        ends_at=now + timedelta(hours=1),
        created_by="olivia",
    )
    with override_settings(AUTO_ROLLBACK="redis_lost"):
        assert rollback.consider(now) is None
    assert switch.read_state().enabled is True
    assert Notification.objects.count() == 0


@pytest.mark.django_db
def test_it_does_nothing_while_the_environment_pins_the_switch():
    firing()
    with override_settings(AUTO_ROLLBACK="redis_lost", REDIS_ENABLED=False):
        assert rollback.consider(timezone.now()) is None
    assert SwitchAudit.objects.count() == 0


@pytest.mark.django_db
def test_it_never_turns_caching_back_on():
    caching_on()
    alert = firing()
    with override_settings(AUTO_ROLLBACK="critical"):
        rollback.consider(timezone.now())
        Alert.objects.filter(pk=alert.pk).update(state="resolved", resolved_at=timezone.now())
        assert rollback.consider(timezone.now()) is None
        firing("cache_hit_rate_critical")
        assert rollback.consider(timezone.now()) is None  # already off: nothing to do
    assert switch.read_state().enabled is False
    assert list(SwitchAudit.objects.values_list("actor", "new_enabled")) == [
        ("system", False),
        ("test", True),
    ]


@pytest.mark.django_db
def test_it_shows_a_banner_with_the_way_back_on_every_dashboard_page():
    caching_on()
    firing()
    with override_settings(AUTO_ROLLBACK="redis_lost"):
        rollback.consider(timezone.now())
    switch.view.refresh()
    olivia = signed_in(flipper())
    sam = signed_in(viewer())
    for path in ["/dashboard/", "/dashboard/alerts/", "/dashboard/switch/", "/dashboard/leads/"]:
        page = olivia.get(path).content.decode()
        assert "Caching was turned off automatically" in page, path
        assert "Turn caching back on…" in page, path
    seen = sam.get("/dashboard/alerts/").content.decode()
    assert "Caching was turned off automatically" in seen
    assert "Turn caching back on…" not in seen
    assert "A person with the permission to flip the switch can turn it back on." in seen
    response = olivia.post(
        "/dashboard/switch/flip", {"enabled": "on", "reason": "Redis is back after the upgrade"}
    )
    assert response.status_code == 302
    switch.view.refresh()
    assert "Caching was turned off automatically" not in olivia.get("/dashboard/").content.decode()


@pytest.mark.django_db
def test_it_says_what_happened_in_the_message(monkeypatch):
    caching_on()
    alert = firing()
    stub = slack(monkeypatch, (200, "ok"))
    with slack_only(), override_settings(AUTO_ROLLBACK="redis_lost"):
        rollback.consider(timezone.now())
        deliver_all()
    [(_, payload, _)] = stub.calls
    assert payload["text"].splitlines() == [
        ":rewind: ROLLBACK caching turned off automatically: Redis connection lost firing since "
        f"{alert.fired_at:%Y-%m-%d %H:%M:%S} UTC",
        "Every answer now comes from the database. Turn caching back on when Redis is sound: "
        "https://ops.example.com/dashboard/#switch",
        f"https://ops.example.com/dashboard/alerts/{alert.pk}/",
    ]


@pytest.mark.django_db(transaction=True)
def test_it_rolls_back_a_served_process_whose_redis_is_killed(tmp_path, slack_catcher):
    from tests.e2e.support import Server
    from tests.redis_servers import RedisServer

    redis = RedisServer().start()
    served = Server(
        tmp_path,
        redis,
        AUTO_ROLLBACK="redis_lost",
        AUTO_ROLLBACK_AFTER_SECONDS="1",
        REDIS_ALERT_WEBHOOK_URL=slack_catcher.url,
        NOTIFICATION_POLL_SECONDS="0.2",
    )
    try:
        with using_redis(redis.url):
            caching_on()
        served.start()
        redis.kill()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = CacheSwitch.objects.first()
            if row is not None and not row.enabled:
                break
            time.sleep(0.1)
        row = CacheSwitch.objects.get()
        assert (row.enabled, row.changed_by) == (False, "system"), served.log_tail()
        audit = SwitchAudit.objects.first()
        assert (audit.actor, audit.source, audit.action) == ("system", "system", "disable")
        alert = Alert.objects.get(rule="redis_connection_lost")
        assert f"alert #{alert.pk} Redis connection lost firing since" in audit.reason
        while time.monotonic() < deadline and not any(
            p["payload"]["text"].startswith(":rewind: ROLLBACK") for p in slack_catcher.posts
        ):
            time.sleep(0.1)
        texts = [p["payload"]["text"].split("\n", 1)[0] for p in slack_catcher.posts]
        assert texts[0] == ":red_circle: CRITICAL Redis connection lost"
        assert any(
            t.startswith(":rewind: ROLLBACK caching turned off automatically") for t in texts
        )
    finally:
        served.stop()
        redis.stop()
