"""`python -m bench gate`: what one call through the cache gate costs.

Cases, timed in one run and interleaved (bench.timing):
  (a) a raw django-redis get of an existing key (the floor: one round trip and one unpickle);
  (b) the gate's hit path on a warm key;
  (c) the gate's miss path, a fresh key per call (trivial load + guarded store);
  (d) the call context loaded from the database (the loader the gate wraps);
  (e) the call context through the gate, warm;
  (f) the gate with the circuit breaker open (Redis stopped), against (f0) its trivial loader.
Targets: (b)/(a) <= 1.2, (d)/(e) >= 3; (f) - (f0) is reported. Ratios are judged on medians.
"""

import json
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from bench import preamble, seed, timing
from leads import services
from leads.services.reads import load_call_context
from monitoring.cache import gate
from monitoring.cache.breaker import OPEN
from opsdash.settings import redis_cache_config
from tests.redis_servers import RedisServer

NAMESPACE = "bench"
DOWN_NAMESPACE = "bench-down"
ENTRY_TTL = 600  # the bench's entries expire even if its clean-up never runs
HIT_VS_RAW_MAX = 1.2
DB_VS_CACHED_MIN = 3.0


def run(args) -> int:
    machine = preamble.start("gate", args, postgres=False)
    caller = seed.caller_with_history()
    cases = redis_cases(caller)
    timing.interleave(cases, args.iterations, args.warmup, args.block)
    counters = gate.stats.snapshot()
    queries = {case.key: sql_queries(case) for case in cases if case.key in ("d", "e")}
    down = breaker_open_cases()
    with gate_on_stopped_redis():
        timing.interleave(down, args.iterations, args.warmup, args.block)
        counters.update(gate.stats.snapshot())
    results = {case.key: case.summary() for case in cases + down}
    problems = check_counters(counters, cases + down)
    report = build_report(args, results, queries, problems)
    report["machine"] = machine.summary()
    print_report(args, results, report)
    return 1 if problems else 0


def redis_cases(caller: seed.Caller) -> list[timing.Case]:
    context = load_call_context(caller.org_number, caller.phone)
    return cached_value_cases(context["lead"]) + call_context_cases(caller, context)


def cached_value_cases(value: dict) -> list[timing.Case]:
    """(a), (b), (c) on the same value, a lead snapshot (a typical cached entry)."""

    def load_value():
        return value

    raw, raw_key = caches["redis"], f"{settings.REDIS_KEY_PREFIX}:raw"
    raw.set(raw_key, value, ENTRY_TTL)
    gate.get_or_load(NAMESPACE, "hit", load_value, ENTRY_TTL)
    expect(raw.get(raw_key) == value, "the raw key holds the value")
    expect(gate.get_or_load(NAMESPACE, "hit", load_value, ENTRY_TTL) == value, "the gate hits")
    return [
        timing.Case("a", "(a) django-redis get, existing key", lambda i: raw.get(raw_key)),
        timing.Case(
            "b",
            "(b) gate hit, warm key",
            lambda i: gate.get_or_load(NAMESPACE, "hit", load_value, ENTRY_TTL),
        ),
        timing.Case(
            "c",
            "(c) gate miss, fresh key (trivial load + guarded store)",
            lambda i: gate.get_or_load(NAMESPACE, f"miss:{i}", load_value, ENTRY_TTL),
        ),
    ]


def call_context_cases(caller: seed.Caller, context: dict) -> list[timing.Case]:
    org_number, phone = caller.org_number, caller.phone
    expect(len(context["recent_messages"]) == settings.CALL_CONTEXT_MESSAGES, "a full context")
    expect(services.call_context(org_number, phone) == context, "the gate serves the context")
    return [
        timing.Case(
            "d",
            "(d) call context from the database (loader)",
            lambda i: load_call_context(org_number, phone),
        ),
        timing.Case(
            "e",
            "(e) call context through the gate, warm",
            lambda i: services.call_context(org_number, phone),
        ),
    ]


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"bench set-up check failed: {what}")


def trivial_loader() -> int:
    return 1


def breaker_open_cases() -> list[timing.Case]:
    return [
        timing.Case(
            "f",
            "(f) gate, breaker open (Redis stopped), trivial loader",
            lambda i: gate.get_or_load(DOWN_NAMESPACE, "key", trivial_loader),
        ),
        timing.Case("f0", "(f0) the trivial loader called directly", lambda i: trivial_loader()),
    ]


@contextmanager
def gate_on_stopped_redis():
    """The gate pointed at a redis-server that has been stopped, its breaker tripped. The long
    cool-down keeps the breaker open throughout: no recovery probe runs while timing."""
    server = RedisServer().start()
    server.stop()
    redis_caches = {**settings.CACHES, "redis": redis_cache_config(server.url)}
    try:
        with override_settings(
            REDIS_URL=server.url, CACHES=redis_caches, REDIS_BREAKER_COOLDOWN=3600
        ):
            for _ in range(settings.REDIS_BREAKER_FAILURES):
                gate.get_or_load(DOWN_NAMESPACE, "trip", trivial_loader)
            if gate.breaker.state != OPEN:
                raise RuntimeError(f"the breaker did not open: {gate.breaker.state}")
            yield
    finally:
        server.close()


def sql_queries(case: timing.Case) -> int:
    """SQL queries one more call of the case runs (untimed)."""
    with CaptureQueriesContext(connection) as captured:
        case.call(-1)
    return len(captured)


def check_counters(counters: dict, cases: list[timing.Case]) -> list[str]:
    """The cases did what they claim: hits were hits, misses stored, no Redis fault."""
    calls = {case.key: case.calls for case in cases}
    bench, ctx, down = counters[NAMESPACE], counters["ctx"], counters[DOWN_NAMESPACE]
    expected = {
        "bench hits == (b) calls + 1": bench["hits"] == calls["b"] + 1,
        "bench stores == (c) calls + 1": bench["stores"] == calls["c"] + 1,
        "ctx hits == (e) calls": ctx["hits"] == calls["e"],
        "breaker-open calls all bypassed": down["bypassed"] == calls["f"],
        "no Redis error while up": bench["errors"] == ctx["errors"] == 0,
        "nothing bypassed while up": bench["bypassed"] == ctx["bypassed"] == 0,
    }
    return [name for name, ok in expected.items() if not ok]


def ratio(numerator: dict, denominator: dict, stat: str) -> float:
    return round(numerator[stat] / denominator[stat], 3)


def build_report(args, results: dict, queries: dict, problems: list[str]) -> dict:
    a, b, d, e, f, f0 = (results[k] for k in ("a", "b", "d", "e", "f", "f0"))
    hit = {"median": ratio(b, a, "median_us"), "mean": ratio(b, a, "mean_us")}
    hit.update(target_max=HIT_VS_RAW_MAX, met=hit["median"] <= HIT_VS_RAW_MAX)
    ctx = {"median": ratio(d, e, "median_us"), "mean": ratio(d, e, "mean_us")}
    ctx.update(target_min=DB_VS_CACHED_MIN, met=ctx["median"] >= DB_VS_CACHED_MIN)
    overhead = {
        "median": round(f["median_us"] - f0["median_us"], 2),
        "mean": round(f["mean_us"] - f0["mean_us"], 2),
    }
    return {
        "scenario": "gate",
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "iterations": args.iterations,
        "warmup": args.warmup,
        "block": args.block,
        "cases": results,
        "sql_queries_per_call": queries,
        "hit_vs_raw": hit,
        "db_vs_cached_context": ctx,
        "breaker_open_overhead_us": overhead,
        "targets_met": hit["met"] and ctx["met"],
        "counter_problems": problems,
    }


def print_report(args, results: dict, report: dict) -> None:
    hit, ctx = report["hit_vs_raw"], report["db_vs_cached_context"]
    overhead = report["breaker_open_overhead_us"]
    print(
        f"gate: {args.iterations} timed calls per case after {args.warmup} warm-up, "
        f"interleaved in rounds of {args.block}; database: {report['database']}"
    )
    print(timing.table(list(results.values())))
    print()
    print(_ratio_line("(b)/(a) gate hit vs raw get", hit, f"<= {HIT_VS_RAW_MAX}"))
    print(_ratio_line("(d)/(e) database vs cached context", ctx, f">= {DB_VS_CACHED_MIN}"))
    print(
        f"{'(f)-(f0) breaker-open overhead':<38} median {overhead['median']:.2f} µs, "
        f"mean {overhead['mean']:.2f} µs"
    )
    print(
        f"SQL queries per call: (d) {report['sql_queries_per_call']['d']}, "
        f"(e) {report['sql_queries_per_call']['e']}"
    )
    for problem in report["counter_problems"]:
        print(f"COUNTER CHECK FAILED: {problem}")
    print(json.dumps(report, separators=(",", ":")))


def _ratio_line(name: str, figures: dict, target: str) -> str:
    verdict = "met" if figures["met"] else "MISSED"
    return (
        f"{name:<38} median {figures['median']:.3f}, mean {figures['mean']:.3f}"
        f"  (target {target} on medians: {verdict})"
    )
