"""`manage.py redis_switch`: the switch for when the dashboard is unreachable. A flip needs a
REDIS_URL (source "runtime") but never talks to Redis, so an unreachable URL is enough here."""

import getpass
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from monitoring.cache import switch
from monitoring.models import CacheSwitch, SwitchAudit

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"

pytestmark = pytest.mark.django_db(transaction=True)


def redis_switch(*args: str) -> list[str]:
    out = StringIO()
    call_command("redis_switch", *args, stdout=out)
    return out.getvalue().splitlines()


@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_shows_the_status_on_first_boot():
    assert redis_switch("status") == [
        "caching:     on",
        "source:      runtime switch",
        "stored:      on",
        "generation:  1",
        "last change: never by - (-)",
    ]
    assert SwitchAudit.objects.count() == 0


@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_shows_the_last_change_in_the_status():
    switch.set_caching(False, actor="alice", reason="incident 42", source="dashboard")
    changed_at = CacheSwitch.objects.get().changed_at.isoformat(timespec="seconds")
    assert redis_switch("status") == [
        "caching:     off",
        "source:      runtime switch",
        "stored:      off",
        "generation:  1",
        f"last change: {changed_at} by alice (incident 42)",
    ]


@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=False)
def test_it_shows_a_switch_pinned_off_by_the_environment():
    lines = redis_switch("status")
    assert lines[:3] == [
        "caching:     off",
        "source:      pinned off by the environment (REDIS_ENABLED=false)",
        "stored:      on",
    ]


@override_settings(REDIS_URL=None, REDIS_ENABLED=None)
def test_it_shows_a_switch_without_redis():
    lines = redis_switch("status")
    assert lines[:3] == [
        "caching:     off",
        "source:      not configured (no REDIS_URL)",
        "stored:      on",
    ]


@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_turns_caching_off_and_audits_it():
    lines = redis_switch("off", "--reason", "x", "--actor", "alice")
    changed_at = CacheSwitch.objects.get().changed_at.isoformat(timespec="seconds")
    assert lines == [
        "caching is now off",
        "caching:     off",
        "source:      runtime switch",
        "stored:      off",
        "generation:  1",
        f"last change: {changed_at} by alice (x)",
    ]
    audit = SwitchAudit.objects.get()
    assert (
        audit.actor,
        audit.action,
        audit.source,
        audit.reason,
        audit.old_enabled,
        audit.new_enabled,
        audit.generation,
    ) == ("alice", "disable", "cli", "x", True, False, 1)
    row = CacheSwitch.objects.get()
    assert (row.enabled, row.changed_by, row.reason) == (False, "alice", "x")
    # The on-commit broadcast updated this process's copy at once.
    assert switch.view.current().enabled is False


@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_names_the_os_user_as_the_default_actor():
    redis_switch("off", "--reason", "maintenance")
    assert SwitchAudit.objects.get().actor == f"{getpass.getuser()} (cli)"


@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_bumps_the_generation_when_turning_caching_back_on():
    redis_switch("off", "--reason", "incident")
    lines = redis_switch("on", "--reason", "resolved")
    assert lines[0] == "caching is now on"
    assert "generation:  2" in lines
    assert list(
        SwitchAudit.objects.order_by("id").values_list(
            "action", "old_enabled", "new_enabled", "generation", "source"
        )
    ) == [("disable", True, False, 1, "cli"), ("enable", False, True, 2, "cli")]
    assert CacheSwitch.objects.get().generation == 2


@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_keeps_the_generation_when_caching_is_already_on():
    redis_switch("on", "--reason", "just making sure")
    audit = SwitchAudit.objects.get()
    assert (audit.action, audit.old_enabled, audit.new_enabled, audit.generation) == (
        "enable",
        True,
        True,
        1,
    )


@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
@pytest.mark.parametrize("reason", [[], ["--reason", ""], ["--reason", "   "]])
@pytest.mark.parametrize("action", ["on", "off"])
def test_it_requires_a_reason(action, reason):
    with pytest.raises(CommandError, match="--reason is required"):
        redis_switch(action, *reason)
    assert SwitchAudit.objects.count() == 0
    assert CacheSwitch.objects.filter(enabled=False).count() == 0


@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=False)
def test_it_refuses_to_flip_a_switch_pinned_by_the_environment():
    with pytest.raises(CommandError) as excinfo:
        redis_switch("on", "--reason", "try")
    assert str(excinfo.value) == (
        "cannot switch caching on: caching is pinned off by the environment (REDIS_ENABLED=false)"
    )
    with pytest.raises(CommandError, match="pinned"):
        redis_switch("off", "--reason", "try")
    assert SwitchAudit.objects.count() == 0


@override_settings(REDIS_URL=None, REDIS_ENABLED=None)
def test_it_refuses_to_flip_a_switch_without_redis():
    with pytest.raises(CommandError) as excinfo:
        redis_switch("off", "--reason", "try")
    assert str(excinfo.value) == (
        "cannot switch caching off: no Redis is configured (REDIS_URL is not set)"
    )
    assert SwitchAudit.objects.count() == 0


def test_it_rejects_an_unknown_action():
    with pytest.raises(CommandError, match="invalid choice: 'toggle'"):
        redis_switch("toggle")


@pytest.mark.django_db(transaction=True)
@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_it_flushes_the_cache_from_the_command_line():
    out = StringIO()
    call_command("redis_switch", "flush", "--reason", "bad data cached", stdout=out)
    assert "cache flushed: generation 2" in out.getvalue()
    audit = SwitchAudit.objects.get()
    assert (audit.action, audit.source, audit.reason, audit.generation) == (
        "flush",
        "cli",
        "bad data cached",
        2,
    )


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_flush_without_a_reason():
    with pytest.raises(CommandError, match="--reason is required"):
        call_command("redis_switch", "flush", stdout=StringIO())
    assert SwitchAudit.objects.count() == 0
