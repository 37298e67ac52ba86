"""The REDIS_ENABLED switch: its effective state in this process, and the one service function
that flips it (dashboard, admin and `manage.py redis_switch` all call `set_caching`).

Effective state, from the environment first:
- no REDIS_URL: "unconfigured" - caching off, nothing to switch;
- REDIS_ENABLED=false: "environment" - pinned off, the database row is ignored;
- otherwise: "runtime" - the database row governs (first boot starts on).
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from monitoring import events
from monitoring.models import CacheSwitch, SwitchAudit

log = logging.getLogger(__name__)

RUNTIME = "runtime"
ENVIRONMENT = "environment"
UNCONFIGURED = "unconfigured"


class SwitchUnavailable(Exception):
    """The switch cannot be flipped: the environment pins it, or no Redis is configured."""


@dataclass(frozen=True)
class SwitchState:
    enabled: bool
    source: str
    generation: int
    stored_enabled: bool
    changed_at: datetime | None = None
    changed_by: str = ""
    reason: str = ""
    invalidations_skipped: bool = False

    @property
    def stale_risk(self) -> bool:
        """Caching is on here, but writes elsewhere skipped their invalidations."""
        return self.enabled and self.invalidations_skipped

    @property
    def can_flip(self) -> bool:
        return self.source == RUNTIME

    def as_dict(self) -> dict:
        return {
            "enabled": self.enabled,
            "source": self.source,
            "generation": self.generation,
            "stored_enabled": self.stored_enabled,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
            "changed_by": self.changed_by,
            "reason": self.reason,
        }


def environment_source() -> str:
    if not settings.REDIS_URL:
        return UNCONFIGURED
    if settings.REDIS_ENABLED is False:
        return ENVIRONMENT
    return RUNTIME


def _state_from_row(row: CacheSwitch) -> SwitchState:
    source = environment_source()
    return SwitchState(
        enabled=row.enabled and source == RUNTIME,
        source=source,
        generation=row.generation,
        stored_enabled=row.enabled,
        changed_at=row.changed_at,
        changed_by=row.changed_by,
        reason=row.reason,
        invalidations_skipped=row.invalidations_skipped,
    )


def _load_row() -> CacheSwitch:
    row, _ = CacheSwitch.objects.get_or_create(pk=CacheSwitch.SINGLETON_ID)
    return row


def read_state() -> SwitchState:
    """The switch as stored now (one query)."""
    return _state_from_row(_load_row())


class SwitchView:
    """This process's copy of the switch. Reading it is an attribute read; it is refreshed from
    the database at least every SWITCH_REFRESH_SECONDS (by the background refresher in a served
    app, else inline on read), and at once when this process changes it."""

    def __init__(self) -> None:
        self._state: SwitchState | None = None
        self._loaded_at = 0.0
        self.background = False

    def current(self) -> SwitchState:
        state = self._state
        if state is None or (
            not self.background
            and time.monotonic() - self._loaded_at >= settings.SWITCH_REFRESH_SECONDS
        ):
            state = self.refresh()
        return state

    def refresh(self) -> SwitchState:
        try:
            state = read_state()
        except DatabaseError:
            if self._state is None:
                raise
            log.warning("switch: database unreachable, keeping the last known state")
            self._loaded_at = time.monotonic()
            return self._state
        self.apply(state)
        return state

    def apply(self, state: SwitchState) -> None:
        self._state = state
        self._loaded_at = time.monotonic()

    def forget(self) -> None:
        self._state = None
        self._loaded_at = 0.0


view = SwitchView()


def note_skipped_invalidation() -> None:
    """A write could not invalidate (caching pinned off or unconfigured here, or Redis
    unreachable): whoever caches next must bump the generation first."""
    CacheSwitch.objects.filter(pk=CacheSwitch.SINGLETON_ID, invalidations_skipped=False).update(
        invalidations_skipped=True
    )


def resume_after_skipped_invalidations(state: SwitchState) -> SwitchState:
    """The state to cache with: if writes skipped their invalidations, first a new generation.
    Call it outside any transaction (the bump must commit before entries are stored)."""
    if not state.stale_risk:
        return state
    return bump_generation(
        actor="system",
        reason="writes skipped their invalidations (caching pinned off, or Redis unreachable)",
        source="system",
        action=SwitchAudit.Action.SKIPPED,
    )


def set_caching(enabled: bool, *, actor: str, reason: str, source: str) -> SwitchState:
    """Turn caching on or off, audited and broadcast. Turning it on bumps the generation, so
    nothing cached before it was turned off can be served again."""
    reason = _required_reason(reason)
    if environment_source() != RUNTIME:
        raise SwitchUnavailable(why_unavailable())
    action = SwitchAudit.Action.ENABLE if enabled else SwitchAudit.Action.DISABLE
    return _change(action, actor=actor, reason=reason, source=source, enabled=enabled)


def bump_generation(*, actor: str, reason: str, source: str, action: str = "flush") -> SwitchState:
    """Make every cached entry unreachable at once (the "flush cache" action)."""
    return _change(action, actor=actor, reason=_required_reason(reason), source=source)


def _change(action: str, *, actor: str, reason: str, source: str, enabled: bool | None = None):
    _load_row()  # the row must exist before it can be locked
    with transaction.atomic():
        row = CacheSwitch.objects.select_for_update().get(pk=CacheSwitch.SINGLETON_ID)
        old = row.enabled
        new = old if enabled is None else enabled
        if enabled is None or (new and not old):
            row.generation += 1
            row.invalidations_skipped = False
        row.enabled = new
        row.changed_at = timezone.now()
        row.changed_by = actor
        row.reason = reason
        row.save()
        SwitchAudit.objects.create(
            actor=actor,
            action=action,
            source=source,
            old_enabled=old,
            new_enabled=new,
            generation=row.generation,
            reason=reason,
        )
        state = _state_from_row(row)
        transaction.on_commit(lambda: _announce(action, state))
    return state


def _announce(action: str, state: SwitchState) -> None:
    view.apply(state)
    log.warning(
        "cache switch: %s by %s (%s); caching %s, generation %s",
        action,
        state.changed_by,
        state.reason,
        "on" if state.enabled else "off",
        state.generation,
    )
    events.publish("switch.changed", {"action": action, **state.as_dict()})


def _required_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required")
    return reason[:500]


def why_unavailable() -> str:
    if environment_source() == UNCONFIGURED:
        return "no Redis is configured (REDIS_URL is not set)"
    return "caching is pinned off by the environment (REDIS_ENABLED=false)"


class SwitchRefresher(threading.Thread):
    """Re-reads the switch row in the background, so no request pays for it and every process
    sees a flip made elsewhere within SWITCH_REFRESH_SECONDS even if the broadcast is lost."""

    def __init__(self, switch_view: SwitchView) -> None:
        super().__init__(name="opsdash-switch-refresher", daemon=True)
        self._view = switch_view
        self._stopping = threading.Event()

    def run(self) -> None:
        self._view.background = True
        try:
            while not self._stopping.wait(settings.SWITCH_REFRESH_SECONDS):
                self._view.refresh()
                close_old_connections()
        finally:
            self._view.background = False

    def stop(self) -> None:
        self._stopping.set()
