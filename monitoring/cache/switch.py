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
from collections.abc import Callable
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
    # The Redis server (run id) the current generation lives on, and its marker there.
    server_id: str = ""
    marker: str = ""
    marked_generation: int = 0

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
        server_id=row.server_id,
        marker=row.marker,
        marked_generation=row.marked_generation,
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
        self._loaded_at = 0.0  # last read from the database
        self._checked_at = 0.0  # last attempt to read it
        self._read_at = 0.0  # when the copy held was read
        self._lock = threading.Lock()
        self.background = False

    def current(self) -> SwitchState:
        state = self.current_unread()
        return state if state is not None else self.refresh()

    def current_unread(self) -> SwitchState | None:
        """What `current()` answers when that needs no database read (else None): what a
        caller on the event loop may use."""
        state = self._state
        if state is None or (
            not self.background
            and time.monotonic() - self._checked_at >= settings.SWITCH_REFRESH_SECONDS
        ):
            return None
        return state

    def refresh(self) -> SwitchState:
        started = self._checked_at = time.monotonic()
        try:
            state = read_state()
        except DatabaseError:
            if self._state is None:
                raise
            # The copy keeps its age: the gate stops trusting a copy that is too old.
            log.warning("switch: database unreachable, keeping the last known state")
            return self._state
        self.apply(state, read_at=started)
        return self._state

    def apply(self, state: SwitchState, read_at: float | None = None) -> None:
        """Take `state`, read from the database at `read_at` (default: now), as this process's
        copy, unless the copy was read later (a slow refresh finishing after a flip was applied
        must not move the process back to the older generation)."""
        read_at = time.monotonic() if read_at is None else read_at
        with self._lock:
            if self._state is None or read_at >= self._read_at:
                self._state, self._read_at = state, read_at
            self._loaded_at = self._checked_at = time.monotonic()

    def known(self) -> SwitchState | None:
        """The copy as it is, without reading the database."""
        return self._state

    def age(self) -> float:
        """Seconds since the copy was last confirmed against the database."""
        return time.monotonic() - self._loaded_at

    def forget(self) -> None:
        self._state = None
        self._loaded_at = self._checked_at = self._read_at = 0.0


view = SwitchView()


def note_skipped_invalidation() -> None:
    """A write could not invalidate (caching pinned off or unconfigured here, or Redis
    unreachable): whoever caches next must bump the generation first."""
    CacheSwitch.objects.filter(pk=CacheSwitch.SINGLETON_ID, invalidations_skipped=False).update(
        invalidations_skipped=True
    )


# Called inside the transaction that starts a generation, with (old, new) generation: retires
# the old generation's marker in Redis and plants the new one's, returning the new marker (or
# None when Redis cannot be told). The gate registers itself here.
_generation_starters: list[Callable[[int, int], str | None]] = []


def on_new_generation(starter: Callable[[int, int], str | None]) -> None:
    if starter not in _generation_starters:
        _generation_starters.append(starter)


def set_caching(enabled: bool, *, actor: str, reason: str, source: str) -> SwitchState:
    """Turn caching on or off, audited and broadcast. Turning it on bumps the generation, so
    nothing cached before it was turned off can be served again."""
    reason = _required_reason(reason)
    if environment_source() != RUNTIME:
        raise SwitchUnavailable(why_unavailable())
    action = SwitchAudit.Action.ENABLE if enabled else SwitchAudit.Action.DISABLE
    return _change(action, actor=actor, reason=reason, source=source, enabled=enabled)


def bump_generation(
    *,
    actor: str,
    reason: str,
    source: str,
    action: str = "flush",
    if_generation: int | None = None,
) -> SwitchState:
    """Make every cached entry unreachable at once (the "flush cache" action). With
    `if_generation`, only if that is still the current generation: a write whose invalidation
    under it was lost needs no bump once a later generation has started (everything cached in
    that one was loaded after the write committed), so a burst of lost invalidations bumps once."""
    return _change(
        action,
        actor=actor,
        reason=_required_reason(reason),
        source=source,
        bump=True,
        if_generation=if_generation,
    )


def _change(
    action: str,
    *,
    actor: str,
    reason: str,
    source: str,
    enabled: bool | None = None,
    bump: bool = False,
    if_generation: int | None = None,
):
    _load_row()  # the row must exist before it can be locked
    with transaction.atomic():
        row = CacheSwitch.objects.select_for_update().get(pk=CacheSwitch.SINGLETON_ID)
        if if_generation is not None and row.generation != if_generation:
            return _state_from_row(row)
        old = row.enabled
        new = old if enabled is None else enabled
        if bump or (new and not old):
            _start_generation(row)
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


def _start_generation(row: CacheSwitch) -> None:
    """Inside the row's transaction: the next generation, with its marker planted in Redis
    before the commit, so no process can read the old generation once the new one is visible."""
    old, row.generation = row.generation, row.generation + 1
    row.invalidations_skipped = False
    _plant(row, retiring=old)


def _plant(row: CacheSwitch, retiring: int = 0) -> None:
    """The current generation's marker planted in Redis (the `retiring` generation's removed),
    recorded on the row; left as it was when Redis cannot be told."""
    for starter in _generation_starters:
        planted = starter(retiring, row.generation)
        if planted is not None:
            row.marker, row.marked_generation = planted, row.generation


class ServerCheck:
    """What the gate found on the Redis server it is connected to, for `reconcile_server`."""

    def __init__(self, run_id: str, marker_of: Callable[[int], str | None]) -> None:
        self.run_id = run_id
        self.marker_of = marker_of


def reconcile_server(check: ServerCheck, *, recent_seconds: float) -> SwitchState | None:
    """Whether the current generation may be used on the server the gate talks to, decided
    under the row's lock so that of N processes seeing the same change only one starts a new
    generation. The generation may be used when it was started on this server (run id) and its
    marker there is still the one planted; a generation never planted anywhere gets its marker
    now. Anything else — another server behind the address, a marker gone (flush, restart from
    an empty or older data set, eviction) or one we never planted — starts a new generation,
    audited as the system, before anything is read. Two servers seen at once (one process's
    connections moved, another's not yet) is not resolved by bumping back and forth: the
    process that sees a server other than the one adopted moments ago keeps bypassing (None)."""
    _load_row()
    with transaction.atomic():
        row = CacheSwitch.objects.select_for_update().get(pk=CacheSwitch.SINGLETON_ID)
        action, reason = _reset_reason(row, check, recent_seconds)
        if reason is None:
            if row.server_id != check.run_id or row.marked_generation != row.generation:
                _adopt(row, check)
                row.save()
            return _state_from_row(row)
        if reason == RECENTLY_ADOPTED:
            return None
        if action == MARKER_LOST and _marker_reset_recently(row, recent_seconds):
            # The same server keeps losing the marker: evicting under memory pressure, since
            # a flush or an empty restart cannot repeat this fast. Its tokens make that safe
            # (a lost token is a miss), so the marker is planted again, without a new
            # generation each time: one bump per settling time at most.
            _replant(row)
            return _state_from_row(row)
        old_enabled = row.enabled
        if action == MARKER_LOST:
            row.marker_reset_at = timezone.now()
            action = SwitchAudit.Action.RESET
        _start_generation(row)
        if row.server_id != check.run_id:
            # Only a change of server starts the settling time (see RECENTLY_ADOPTED).
            row.server_id, row.server_since = check.run_id, timezone.now()
        row.save()
        SwitchAudit.objects.create(
            actor="system",
            action=action,
            source=SwitchAudit.Source.SYSTEM,
            old_enabled=old_enabled,
            new_enabled=row.enabled,
            generation=row.generation,
            reason=reason[:500],
        )
        state = _state_from_row(row)
        transaction.on_commit(lambda: _announce(action, state))
    return state


RECENTLY_ADOPTED = "recently adopted"
MARKER_LOST = "marker lost"


def _marker_reset_recently(row: CacheSwitch, recent_seconds: float) -> bool:
    since = row.marker_reset_at
    return since is not None and (timezone.now() - since).total_seconds() < recent_seconds


def _replant(row: CacheSwitch) -> None:
    _plant(row)
    row.save()
    log.warning("switch: the marker of generation %s was lost again: planted anew", row.generation)


def _reset_reason(
    row: CacheSwitch, check: ServerCheck, recent_seconds: float
) -> tuple[str, str | None]:
    """(audit action, why a new generation must start), or (_, None) when none must."""
    reset = SwitchAudit.Action.RESET
    skipped = " (writes had also skipped their invalidations)" if row.invalidations_skipped else ""
    if row.server_id and row.server_id != check.run_id:
        since = row.server_since
        if since and (timezone.now() - since).total_seconds() < recent_seconds:
            return reset, RECENTLY_ADOPTED
        return reset, (
            f"the Redis server changed (run id {row.server_id[:12]} -> {check.run_id[:12]}): "
            "restarted or failed over, it may hold entries older than acknowledged writes" + skipped
        )
    marker = check.marker_of(row.generation)
    if row.marked_generation == row.generation and marker is None:
        return MARKER_LOST, (
            f"the marker of generation {row.generation} is gone from Redis: it lost data "
            "(flushed, restarted empty or from an older snapshot, or evicted)" + skipped
        )
    if marker is not None and (row.marked_generation != row.generation or marker != row.marker):
        return MARKER_LOST, f"Redis holds a marker of generation {row.generation} we never planted"
    if row.invalidations_skipped:
        return SwitchAudit.Action.SKIPPED, (
            "writes skipped their invalidations (caching pinned off, or Redis unreachable)"
        )
    return reset, None


def _adopt(row: CacheSwitch, check: ServerCheck) -> None:
    """A generation never planted (its bump could not reach Redis): plant it now."""
    if row.server_id != check.run_id:
        # A first server is adopted without a settling time (that is for a change of server).
        row.server_id, row.server_since = check.run_id, None
    if row.marked_generation != row.generation:
        _plant(row)


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
