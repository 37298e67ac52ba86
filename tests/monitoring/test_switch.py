"""The REDIS_ENABLED switch: audited flips, environment semantics, and propagation."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import OperationalError, connection
from django.test import override_settings

from monitoring.cache import gate, switch
from monitoring.models import CacheSwitch, SwitchAudit

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # configured, never contacted by a flip


@pytest.fixture(autouse=True)
def redis_configured():
    with override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None):
        yield


def test_it_starts_on_at_first_boot():
    state = switch.read_state()
    assert (state.enabled, state.source, state.generation) == (True, "runtime", 1)


def test_it_audits_a_flip_with_actor_and_reason():
    state = switch.set_caching(False, actor="ops@example.com", reason="latency spike", source="cli")
    assert state.enabled is False
    audit = SwitchAudit.objects.get()
    assert (audit.actor, audit.reason, audit.source, audit.action) == (
        "ops@example.com",
        "latency spike",
        "cli",
        "disable",
    )
    assert (audit.old_enabled, audit.new_enabled, audit.generation) == (True, False, 1)
    row = CacheSwitch.objects.get()
    assert (row.enabled, row.changed_by, row.reason) == (False, "ops@example.com", "latency spike")


def test_it_bumps_the_generation_when_turned_back_on():
    switch.set_caching(False, actor="a", reason="off", source="cli")
    state = switch.set_caching(True, actor="a", reason="on", source="cli")
    assert state.generation == 2
    assert list(SwitchAudit.objects.order_by("id").values_list("action", "generation")) == [
        ("disable", 1),
        ("enable", 2),
    ]


def test_it_refuses_a_flip_without_a_reason():
    with pytest.raises(ValueError, match="reason"):
        switch.set_caching(False, actor="a", reason="  ", source="cli")
    assert SwitchAudit.objects.count() == 0
    assert switch.read_state().stored_enabled is True


def test_it_lets_the_environment_pin_caching_off():
    with override_settings(REDIS_ENABLED=False):
        state = switch.read_state()
        assert (state.enabled, state.stored_enabled, state.source) == (False, True, "environment")
        assert gate.switch.current().enabled is False
        with pytest.raises(switch.SwitchUnavailable, match="pinned off"):
            switch.set_caching(True, actor="a", reason="try", source="cli")
    assert SwitchAudit.objects.count() == 0


def test_it_reports_no_switch_without_redis():
    with override_settings(REDIS_URL=None):
        state = switch.read_state()
        assert (state.enabled, state.source, state.can_flip) == (False, "unconfigured", False)
        with pytest.raises(switch.SwitchUnavailable, match="REDIS_URL"):
            switch.set_caching(True, actor="a", reason="try", source="cli")


def test_it_flushes_by_bumping_the_generation():
    state = gate.flush(actor="ops", reason="bad data cached", source="dashboard")
    assert (state.enabled, state.generation) == (True, 2)
    assert SwitchAudit.objects.get().action == "flush"


def test_it_applies_a_flip_to_this_process_at_once():
    with override_settings(SWITCH_REFRESH_SECONDS=3600):
        assert gate.switch.current().enabled is True
        switch.set_caching(False, actor="a", reason="off", source="cli")
        assert gate.switch.current().enabled is False


def test_it_keeps_the_last_known_state_while_the_database_is_unreachable(monkeypatch):
    with override_settings(SWITCH_REFRESH_SECONDS=0.01):
        assert gate.switch.current().enabled is True

        def unreachable():
            raise OperationalError("connection refused")

        monkeypatch.setattr(switch, "read_state", unreachable)
        time.sleep(0.02)
        assert gate.switch.current().enabled is True


def test_it_loses_no_audit_row_under_concurrent_flips(postgres):
    flips, errors = 12, []
    barrier = threading.Barrier(flips)

    def flip(n: int) -> None:
        try:
            barrier.wait(10)
            switch.set_caching(n % 2 == 0, actor=f"user{n}", reason=f"flip {n}", source="api")
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=flip, args=(n,)) for n in range(flips)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    audits = list(SwitchAudit.objects.order_by("id"))
    assert sorted(a.actor for a in audits) == sorted(f"user{n}" for n in range(flips))
    # Serialized: each flip saw the state the previous one left, generation bumped per off->on.
    for before, after in zip(audits, audits[1:], strict=False):
        assert after.old_enabled == before.new_enabled
        assert after.generation == before.generation + (after.new_enabled and not after.old_enabled)
    row = CacheSwitch.objects.get()
    assert (row.enabled, row.generation) == (audits[-1].new_enabled, audits[-1].generation)


def subprocess_environment() -> dict[str, str]:
    db = settings.DATABASES["default"]
    if settings.DATABASE_IS_POSTGRES:
        host = db.get("HOST") or "127.0.0.1"
        url = f"postgres://{db.get('USER') or ''}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": UNREACHABLE_REDIS,
        "REDIS_ENABLED": "",
        "SWITCH_REFRESH_SECONDS": str(settings.SWITCH_REFRESH_SECONDS),
        "PYTHONPATH": str(ROOT),
    }


def test_it_reaches_another_process_within_a_second():
    switch.read_state()  # the row exists before the watcher starts
    watcher = subprocess.Popen(
        [sys.executable, "-m", "tests.monitoring.switch_watcher"],
        cwd=ROOT,
        env=subprocess_environment(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout.readline().strip() == "ready True"
        switch.set_caching(False, actor="a", reason="rollback", source="cli")
        committed_at = time.time()
        line = watcher.stdout.readline().split()
        assert line[0] == "seen"
        assert float(line[1]) - committed_at < 1.0
    finally:
        watcher.kill()
        watcher.wait(10)


def test_it_never_moves_a_process_back_to_an_older_generation(monkeypatch):
    """A background refresh that read the row before a flush, and finishes after the flush's
    own state was applied, must not put the older generation back."""
    view = switch.SwitchView()
    view.apply(switch.read_state())
    before = view.current().generation
    real_read = switch.read_state
    read_done, flushed = threading.Event(), threading.Event()

    def slow_read():
        state = real_read()  # read before the flush ...
        read_done.set()
        flushed.wait(5)  # ... returned after it
        return state

    monkeypatch.setattr(switch, "read_state", slow_read)
    refresher = threading.Thread(target=view.refresh)
    refresher.start()
    read_done.wait(5)
    monkeypatch.setattr(switch, "read_state", real_read)
    view.apply(switch.bump_generation(actor="ops", reason="test", source="cli"))
    flushed.set()
    refresher.join(5)

    assert view.current().generation == before + 1
