"""The one way a person turns caching on or off or flushes the cache, whoever asks: the
dashboard, the admin, `manage.py redis_switch`. Each call checks, in this order, the permission
(for a signed-in user), the reason, and that the switch is not pinned by the environment; then
it changes the switch row, audited with the actor and the source. The labels every page and
command shows for the switch are defined here, once."""

from django.core.exceptions import PermissionDenied

from monitoring.cache import switch
from monitoring.cache.switch import ENVIRONMENT, RUNTIME, UNCONFIGURED

FLIP_PERMISSION = "monitoring.flip_cacheswitch"

SOURCE_LABELS = {
    RUNTIME: "runtime switch",
    ENVIRONMENT: "pinned off by the environment (REDIS_ENABLED=false)",
    UNCONFIGURED: "not configured (no REDIS_URL)",
}
STATE_LABELS = {
    "unconfigured": "no Redis",
    "pinned": "caching pinned off",
    "on": "caching on",
    "off": "caching off",
}


class Refused(Exception):
    """The change was not made; the message says why (for the person who asked)."""


def may_flip(user) -> bool:
    return bool(user and user.is_authenticated and user.is_staff and user.has_perm(FLIP_PERMISSION))


def state_label(state: switch.SwitchState) -> str:
    if state.source == UNCONFIGURED:
        return STATE_LABELS["unconfigured"]
    if state.source == ENVIRONMENT:
        return STATE_LABELS["pinned"]
    return STATE_LABELS["on" if state.enabled else "off"]


def flip(
    enabled: bool, *, reason: str, source: str, user=None, actor: str = ""
) -> switch.SwitchState:
    """Caching on or off. `user` (a signed-in person) must hold the flip permission; a command
    line names its `actor` instead."""
    who = _checked(user, actor, reason)
    return switch.set_caching(enabled, actor=who, reason=reason, source=source)


def flush(*, reason: str, source: str, user=None, actor: str = "") -> switch.SwitchState:
    """Every cached entry made unreachable (a new generation)."""
    who = _checked(user, actor, reason)
    return switch.bump_generation(actor=who, reason=reason, source=source)


def _checked(user, actor: str, reason: str) -> str:
    if user is not None and not may_flip(user):
        raise PermissionDenied("needs the permission to flip the cache switch")
    if not (reason or "").strip():
        raise Refused("a reason is required: say why")
    if switch.environment_source() != RUNTIME:
        raise Refused(switch.why_unavailable())
    return user.get_username() if user is not None else actor
