"""The lead domain's readiness checks for `manage.py redis_validate`: what the cache does for a
real call context, on this deployment's database and Redis.

They work on a scratch organization, number and lead made for the run (named with a unique
marker, numbers from the fictional 555-01xx range) and deleted when the run ends, with their
cache entries. Writes go through the services and commit, as real ones do: invalidation runs
on commit, so a rolled-back transaction could not show it.
"""

import getpass
import random
import statistics
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from leads import services
from leads.models import Organization, PhoneNumber
from leads.services import reads
from monitoring.cache import gate, switch
from monitoring.cache.diagnostics import caching_on_in_this_process
from monitoring.validation import Outcome, ValidationContext, failed, passed, register, skipped

NEEDS_REDIS = ["connection"]
SHARED_KEY = "leads.scratch"
FORCED_KEY = "leads.caching_forced"


@dataclass(frozen=True)
class Scratch:
    marker: str
    organization_id: int
    number: str
    phone: str
    lead_id: int
    # Another caller's context: cached and never written to, for the generation check.
    stranger: str


def scratch(context: ValidationContext) -> Scratch:
    """The run's scratch lead, made on first use; deleted (with its cache entries) at the end."""
    if SHARED_KEY not in context.shared:
        context.shared[SHARED_KEY] = _make_scratch(context)
    return context.shared[SHARED_KEY]


def _make_scratch(context: ValidationContext) -> Scratch:
    marker = f"redis-validate-{uuid.uuid4().hex[:8]}"
    number, phone, stranger = _unused_fictional_numbers(3)
    org = Organization.objects.create(name=f"{marker} (temporary)", timezone="UTC")
    context.cleanup.callback(_delete_scratch, org.id)
    PhoneNumber.objects.create(organization=org, e164=number, label=marker)
    lead, _ = services.find_or_create_lead(org.id, phone)
    services.update_lead(lead["id"], name=marker, status="contacted")
    call = services.open_conversation(lead["id"], "voice")
    for n in range(settings.CALL_CONTEXT_MESSAGES):
        role = "customer" if n % 2 == 0 else "agent"
        services.add_message(call.id, role, f"{marker} message {n}")
    services.complete_conversation(call.id, title=marker, summary=f"{marker} summary")
    return Scratch(marker, org.id, number, phone, lead["id"], stranger)


def _unused_fictional_numbers(count: int) -> list[str]:
    """Distinct numbers in the 555-0100..0199 block (reserved for fiction in every area code);
    the first, which the scratch organization answers on, answered on by no organization yet."""
    chosen: list[str] = []
    while len(chosen) < count:
        number = f"+1{random.randint(201, 989)}55501{random.randint(0, 99):02d}"
        if number in chosen or (not chosen and PhoneNumber.objects.filter(e164=number).exists()):
            continue
        chosen.append(number)
    return chosen


def _delete_scratch(organization_id: int) -> None:
    # Deleting the organization invalidates its leads, numbers and every entry naming them.
    Organization.objects.filter(pk=organization_id).delete()


def cache_unavailable(context: ValidationContext) -> Outcome | None:
    """None when the checks can cache, else why not (a skip). While the switch is off at
    runtime (rollout phase 1), caching is forced on in this process only, for the rest of the
    run: what caching will do can be shown before it is turned on."""
    state = switch.read_state()
    if state.source != switch.RUNTIME:
        return skipped(f"caching cannot run here: {switch.why_unavailable()}")
    if not state.enabled and FORCED_KEY not in context.shared:
        context.cleanup.enter_context(caching_on_in_this_process())
        context.shared[FORCED_KEY] = True
    return None


def forced_note(context: ValidationContext) -> str:
    if context.shared.get(FORCED_KEY):
        return " (caching forced on in this process only: the switch stays off)"
    return ""


def sql_during(action) -> tuple[object, int]:
    """(action's result, SQL queries it ran), not counting the switch's own periodic re-read
    (every SWITCH_REFRESH_SECONDS, whatever is read)."""
    with CaptureQueriesContext(connection) as queries:
        result = action()
    own = [q for q in queries.captured_queries if "monitoring_cacheswitch" not in q["sql"]]
    return result, len(own)


# --- function -----------------------------------------------------------------------------


@register("call_context_cached", "function", weight=2, requires=NEEDS_REDIS)
def call_context_cached(context: ValidationContext):
    if unavailable := cache_unavailable(context):
        return unavailable
    lead = scratch(context)
    first = services.call_context(lead.number, lead.phone)
    second, queries = sql_during(lambda: services.call_context(lead.number, lead.phone))
    if queries:
        return failed(
            f"the second read of a call context ran {queries} SQL queries: it was not served "
            f"from Redis (breaker {gate.breaker.state})"
        )
    if second != first or (second["lead"] or {}).get("id") != lead.lead_id:
        return failed("the cached call context differs from the one loaded from the database")
    return passed(
        f"a scratch lead's call context ({len(second['recent_messages'])} messages) was stored; "
        f"the next read ran 0 SQL queries{forced_note(context)}"
    )


@register("invalidation_on_write", "function", weight=2, requires=NEEDS_REDIS)
def invalidation_on_write(context: ValidationContext):
    if unavailable := cache_unavailable(context):
        return unavailable
    lead = scratch(context)
    services.call_context(lead.number, lead.phone)
    renamed = f"{lead.marker} renamed"
    services.update_lead(lead.lead_id, name=renamed)
    shown = (services.call_context(lead.number, lead.phone)["lead"] or {}).get("name")
    if shown != renamed:
        return failed(f"after update_lead the next read still shows {shown!r}, not {renamed!r}")
    return passed(
        "after update_lead committed, the next read of its call context showed it"
        + forced_note(context)
    )


@register("generation_bump", "function", requires=["connection", "switch"])
def generation_bump(context: ValidationContext):
    """Turning caching back on must make every older entry unreachable. Showing that means
    flipping the deployment's switch (off, then on: audited) and bumping its generation, which
    empties the cache for every process: so only with --allow-switch-flip."""
    if not context.options.allow_switch_flip:
        return skipped(
            "would flip the deployment's switch off and on, which empties the cache for every "
            "process: pass --allow-switch-flip to run it"
        )
    before = switch.read_state()
    if not before.can_flip:
        return skipped(f"the switch cannot flip: {switch.why_unavailable()}")
    lead = scratch(context)
    services.call_context(lead.number, lead.stranger)  # cached, and never written to
    changed = f"{lead.marker} changed while caching was off"
    after = _flip_off_write_and_on(lead, changed)
    stranger, stranger_queries = sql_during(
        lambda: services.call_context(lead.number, lead.stranger)
    )
    problems = []
    if after.generation <= before.generation:
        problems.append(f"the generation stayed at {after.generation}")
    if not stranger_queries:
        problems.append("an entry cached before the flip was still served after it")
    shown = (services.call_context(lead.number, lead.phone)["lead"] or {}).get("name")
    if shown != changed:
        problems.append(f"a write made while caching was off is not shown ({shown!r})")
    if problems:
        return failed("; ".join(problems))
    return passed(
        f"off, a write, on: generation {before.generation} -> {after.generation}; entries "
        "cached before were unreachable and the write showed (switch restored: on)"
    )


def _flip_off_write_and_on(lead: Scratch, changed: str) -> switch.SwitchState:
    actor = f"{getpass.getuser()} (redis_validate)"
    switch.set_caching(
        False, actor=actor, reason="redis_validate generation check (back on at once)", source="cli"
    )
    try:
        services.update_lead(lead.lead_id, name=changed)
    finally:
        # Restored whatever happened: the switch was on when the check began.
        state = switch.set_caching(
            True, actor=actor, reason="redis_validate generation check done", source="cli"
        )
    return state


# --- performance --------------------------------------------------------------------------


@register("cached_read_speed", "performance", weight=2, requires=NEEDS_REDIS)
def cached_read_speed(context: ValidationContext):
    if unavailable := cache_unavailable(context):
        return unavailable
    lead = scratch(context)
    samples = max(1, context.options.samples)
    services.call_context(lead.number, lead.phone)
    cached, queries = sql_during(
        lambda: [_timed_ms(services.call_context, lead.number, lead.phone) for _ in range(samples)]
    )
    if queries:
        return failed(f"{samples} cached reads ran {queries} SQL queries: not served from Redis")
    # The loader is exactly what a hit saves: the database read of the call context.
    database = [_timed_ms(reads.load_call_context, lead.number, lead.phone) for _ in range(samples)]
    outcome = speedup_outcome(cached, database, context.options.min_speedup)
    return Outcome(outcome.status, outcome.detail + forced_note(context))


def speedup_outcome(cached_ms: list[float], database_ms: list[float], min_speedup: float):
    cached, database = statistics.median(cached_ms), statistics.median(database_ms)
    speedup = database / cached if cached else float("inf")
    detail = (
        f"median of {len(cached_ms)}: cached {cached:.3f} ms, database {database:.3f} ms "
        f"({speedup:.1f}x; needs {min_speedup:g}x)"
    )
    return passed(detail) if speedup >= min_speedup else failed(detail)


def _timed_ms(read, *args) -> float:
    started = time.perf_counter()
    read(*args)
    return (time.perf_counter() - started) * 1000
