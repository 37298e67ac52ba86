"""After a write to a caller's lead has committed and been invalidated, their hot entries (the
lead lookup, the call context under every number of the organization) are read again at once,
but only those that were in use: every call and text writes to the lead, and the next one must
not pay for it. A failure here costs a miss, never the write."""

import logging
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

from django.db import DatabaseError

import leads.services.cache_keys as cache_keys
import leads.services.reads as reads
from leads.models import PhoneNumber
from monitoring.cache import gate

log = logging.getLogger(__name__)

# Where the re-warm of a write made in this context goes instead of running at once: a webhook
# answering a provider hands it to its background writer (see `deferred_to`).
_later: ContextVar[Callable[..., None] | None] = ContextVar("rewarm_later", default=None)


@contextmanager
def deferred_to(submit: Callable[..., None]):
    """Within this block, writes that commit leave their re-warm to `submit(callers, pairs)`
    (a background worker), off the answer's path: the entries are invalidated at once all the
    same, so a read before the re-warm has run loads them itself, never stale."""
    token = _later.set(submit)
    try:
        yield
    finally:
        _later.reset(token)


def callers_soon(pairs) -> None:
    """`callers(pairs)` now, or through the submitter of `deferred_to` when one is set."""
    pairs = sorted(set(pairs))
    submit = _later.get()
    if submit is None or not pairs:
        callers(pairs)
        return
    submit(callers, pairs)


def callers(pairs) -> None:
    """Re-warm the entries of these (organization id, phone) callers."""
    pairs = sorted(set(pairs))
    if not pairs:
        return
    try:
        numbers = _numbers_of({org for org, _ in pairs})
        for org, phone in pairs:
            gate.refresh(
                cache_keys.LEAD,
                cache_keys.lead_key(org, phone),
                lambda o=org, p=phone: reads.load_lead(o, p),
                scopes=reads.lead_scopes_of(phone),
            )
            for number in numbers.get(org, ()):
                gate.refresh(
                    cache_keys.CTX,
                    cache_keys.context_key(number, phone),
                    lambda n=number, p=phone: reads.load_call_context(n, p),
                    scopes=reads.context_scopes_of(phone),
                )
    except DatabaseError as exc:
        log.warning("cache: re-warming after a write failed (%s); the next read loads it", exc)


def _numbers_of(organization_ids) -> dict[int, list[str]]:
    numbers: dict[int, list[str]] = {}
    rows = PhoneNumber.objects.filter(organization_id__in=organization_ids).values_list(
        "organization_id", "e164"
    )
    for org, number in rows:
        numbers.setdefault(org, []).append(number)
    return numbers
