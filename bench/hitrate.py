"""`python -m bench hitrate`: the cache's hit rate under a repeat-caller workload, from cold.

In one run: seed the population (100,000 leads in the big organization), then serve the app
under daphne with caching on and an empty cache (the run's own key prefix), and replay from a
separate process, closed loop: call initiations for callers drawn Zipf(1.1) over every lead of
the big organization (rank = a fixed random order), with 5 % writes mixed in (half texts via
Twilio's SMS webhook, half post-call transcriptions; all validly signed). Then the same workload
(same seed) against a fresh daphne with caching switched off.

Reported:
- the hit-rate curve, per interval (default 10 s), from the app's own metric windows (each is
  a delta: the hits and misses of the few seconds it covers): the `ctx` namespace (the call
  context the initiation reads) and every namespace together; beside it the best any cache could
  do on the same requests (a caller's first initiation must miss: a compulsory miss; a write
  re-warms a context it drops but warms none that was not cached) and the gap between the two;
- the steady state: the last third of the run;
- SQL statements per 1,000 webhook requests, caching on (last third) against off: on the
  request path from the app's own metrics (`sql` per route group, counted in any thread the
  request used), and (a second count, by bench.served) the deferred writer's statements, which
  run after the answer and which the app's request metrics do not count; and how far caching
  could reduce them at best (every initiation a hit; deferred writes included).
Targets: steady-state `ctx` hit rate >= 90 %; request-path SQL per 1,000 webhook requests at
least 90 % lower than with caching off.
"""

import json
import time

from django.conf import settings

from bench import preamble, seed, workload
from bench.loadgen import FIRST
from monitoring.cache import switch

HIT_RATE_MIN = 0.90
SQL_REDUCTION_MIN = 0.90
QUICK = {
    "leads": 2_000,
    "small_leads": 100,
    "duration": 8.0,
    "off_duration": 5.0,
    "interval": 2.0,
    "connections": 4,
}


def run(args) -> int:
    machine = preamble.start("hitrate", args, quick=QUICK)
    if machine is None:
        return 2
    people, phones = seed.ranked_population(args.leads, args.small_leads)
    runs = {
        "on": measure(True, people, phones, args, args.duration),
        "off": measure(False, people, phones, args, args.off_duration),
    }
    report = build_report(args, people, runs)
    report["machine"] = machine.summary()
    return preamble.finish(report, print_report)


# --- one run --------------------------------------------------------------------------------


def measure(caching: bool, people, phones: list[str], args, duration: float) -> dict:
    """Serve, load for `duration` seconds, and collect what the load and the app saw."""
    if switch.read_state().enabled != caching:
        switch.set_caching(caching, actor="bench", reason="bench hitrate", source="cli")
    with workload.served(args) as app:
        load = workload.LoadRun(app, plan(people, phones, args)).start()
        t0, tag = load.started, load.plan["tag"]
        skip = duration * 2 / 3 if caching else min(5.0, duration / 3)
        workload.sleep_until(t0 + skip)
        first = snapshot(app, tag)
        workload.sleep_until(t0 + duration)
        last = snapshot(app, tag)
        endpoint = workload.api_get(app, "/api/monitoring/metrics/performance?window=60s")
        summary, records = load.stop()
        seen = app_record(app, t0)
    seen["app_log"] = workload.log_summary(app.log_text, t0)
    return seen | {
        "t0": t0,
        "duration": duration,
        "measured_from": t0 + skip,
        "summary": summary,
        "records": records,
        "counts": (first, last),
        "endpoint": endpoint,
    }


def app_record(app: workload.App, t0: float) -> dict:
    """What the app recorded since `t0`: its metric windows (once the last one is written),
    its breaker's transitions, and the switch audit rows (generation bumps)."""
    time.sleep(settings.METRICS_FLUSH_SECONDS + 1)
    rows = workload.windows(app, t0, time.time())
    return {
        "windows": rows,
        "breaker": workload.breaker_changes(rows, t0),
        "switch_audit": workload.switch_audit(t0),
    }


def plan(people, phones: list[str], args) -> dict:
    return {
        "connections": args.connections,
        "rate": 0,
        "max_seconds": args.duration + args.off_duration + 120,
        "org_number": people.org_number,
        "callers": phones,
        "zipf": args.zipf,
        "seed": 20,
        "write_share": args.write_share,
        "verify_after": [],
    }


def snapshot(app: workload.App, tag: str) -> dict:
    return {**workload.sql_counts(app), "recorded": workload.initiations_recorded(tag)}


# --- figures --------------------------------------------------------------------------------


def curve(run: dict, interval: float) -> list[dict]:
    """Per interval since the load started: the windows that ended in it."""
    points, t0 = [], run["t0"]
    end = max((w["ended"] for w in run["windows"]), default=t0)
    start = t0
    while start < end:
        rows = [w for w in run["windows"] if start <= w["ended"] < start + interval]
        if rows:
            points.append({"at_s": round(start + interval - t0), **hit_figures(rows, run)})
        start += interval
    return points


def hit_figures(rows: list[dict], run: dict) -> dict:
    """The app's hit rates over some windows, against the compulsory misses of the initiations
    the load sent in the time those windows cover."""
    covered = workload.between(run["records"], rows[0]["started"], rows[-1]["ended"], kinds=(0,))
    ctx = workload.cache_sums(rows, "ctx")
    compulsory = workload.flagged(covered, FIRST)
    lookups = ctx["hits"] + ctx["misses"]
    return {
        "initiations": len(covered),
        "ctx_lookups": lookups,
        "ctx_hit_rate": ctx["hit_rate"],
        "all_hit_rate": workload.cache_sums(rows)["hit_rate"],
        "ideal_hit_rate": workload.ratio(len(covered) - compulsory, len(covered)),
        "gap_points": _points(len(covered) - compulsory, len(covered), ctx["hit_rate"]),
    }


def _points(ideal_hits: int, lookups: int, hit_rate: float | None) -> float | None:
    """How far the hit rate fell short of the ideal, in percentage points."""
    if not lookups or hit_rate is None:
        return None
    return round(100 * (ideal_hits / lookups - hit_rate), 1)


def measured(run: dict) -> list[dict]:
    """The windows of the measured part: the last third with caching on, all but the first
    seconds switched off."""
    return [w for w in run["windows"] if w["started"] >= run["measured_from"] - 1]


def sql_figures(run: dict) -> dict:
    rows = measured(run)
    path = workload.request_sums(rows)
    by_group = {g: workload.request_sums(rows, (g,)) for g in workload.WEBHOOK_GROUPS}
    first, last = run["counts"]
    answered = workload.between(run["records"], first["at"], last["at"])
    recorded = last["recorded"] - first["recorded"]
    deferred = last["deferred"] - first["deferred"]
    return {
        "request_path_per_1000": path["sql_per_1000"],
        "by_group": by_group,
        "webhook_requests": path["requests"],
        "second_count_request_per_1000": workload.ratio(
            1000 * (last["request"] - first["request"]), len(answered), 1
        ),
        "deferred_per_1000_answered": workload.ratio(1000 * deferred, len(answered), 1),
        "deferred_per_recorded_initiation": workload.ratio(deferred, recorded, 1),
        "initiations_recorded_in_interval": recorded,
        "initiations_recorded_by_then": last["recorded"],
        "initiations_answered_by_then": sum(
            1 for r in run["records"] if r[0] < last["at"] and r[2] == 0
        ),
        "background_statements_per_second": workload.ratio(
            last["background"] - first["background"], last["at"] - first["at"], 1
        ),
    }


def with_deferred(figures: dict) -> float | None:
    """Every statement per 1,000 webhook requests, were every initiation's deferred write done:
    the request path's, plus the deferred statements per recorded initiation times the
    initiations among the requests."""
    init, per = (
        figures["by_group"]["webhook_initiation"],
        figures["deferred_per_recorded_initiation"],
    )
    if not figures["webhook_requests"] or per is None:
        return None
    share = init["requests"] / figures["webhook_requests"]
    return round(figures["request_path_per_1000"] + 1000 * share * per, 1)


def reductions(on: dict, off: dict) -> dict:
    """The initiations' own reduction, and the best the whole mix could reach if every
    initiation were a hit (the writes' request-path SQL as measured with caching on)."""
    init_on, init_off = (f["by_group"]["webhook_initiation"] for f in (on, off))
    writes = sum(on["by_group"][g]["sql"] for g in ("webhook_sms", "webhook_post_call"))
    best = 1000 * writes / on["webhook_requests"]
    return {
        "initiations_only": round(1 - init_on["sql_per_1000"] / init_off["sql_per_1000"], 4),
        "if_every_initiation_hit": round(1 - best / off["request_path_per_1000"], 4),
        "deferred_writes_included": round(1 - with_deferred(on) / with_deferred(off), 4),
    }


def load_figures(run: dict) -> dict:
    records = run["records"]
    init = [r for r in records if r[2] == 0]
    return {
        "requests": len(records),
        "rps": round(len(records) / run["duration"], 1),
        "initiations": len(init),
        "writes": len(records) - len(init),
        "non_2xx": sum(1 for r in records if not 200 <= r[3] < 300),
        "errors": run["summary"]["errors"],
        "fallbacks": run["summary"]["fallbacks"],
        "distinct_callers": run["summary"]["callers_seen"],
        "initiation_latency": workload.latency(init),
    }


def endpoint_figures(run: dict) -> dict:
    """The app's own performance endpoint, last 60 s of the run, as a cross-check."""
    doc = run["endpoint"]
    ctx = doc["cache_namespaces"].get("ctx", {})
    groups = doc["route_groups"]
    return {
        "ctx_hit_rate": ctx.get("hit_rate"),
        "all_hit_rate": doc["cache"]["hit_rate"],
        "sql_per_request": {g: groups.get(g, {}).get("sql_per_request") for g in groups},
    }


# --- report ---------------------------------------------------------------------------------


def build_report(args, people, runs: dict) -> dict:
    on, off = runs["on"], runs["off"]
    steady = hit_figures(measured(on), on)
    sql_on, sql_off = sql_figures(on), sql_figures(off)
    reduction = 1 - sql_on["request_path_per_1000"] / sql_off["request_path_per_1000"]
    sql_on["reductions"] = reductions(sql_on, sql_off)
    targets = {
        "steady_ctx_hit_rate": {"value": steady["ctx_hit_rate"], "min": HIT_RATE_MIN},
        "sql_reduction": {"value": round(reduction, 4), "min": SQL_REDUCTION_MIN},
    }
    for target in targets.values():
        target["met"] = target["value"] is not None and target["value"] >= target["min"]
    return {
        "scenario": "hitrate",
        "settings": {k: v for k, v in vars(args).items() if k != "scenario"},
        "population": {"rows": people.rows, "seed_seconds": people.seconds},
        "load": {"on": load_figures(on), "off": load_figures(off)},
        "curve": curve(on, args.interval),
        "steady": steady,
        "sql": {"on": sql_on, "off": sql_off},
        "endpoint_last_60s": endpoint_figures(on),
        "breaker": {"on": on["breaker"], "off": off["breaker"]},
        "switch_audit": {"on": on["switch_audit"], "off": off["switch_audit"]},
        "app_log": {"on": on["app_log"], "off": off["app_log"]},
        "targets": targets,
        "targets_met": all(t["met"] for t in targets.values()),
    }


def print_report(report: dict) -> None:
    s, load = report["settings"], report["load"]
    print(
        f"\nhitrate: {s['leads']} leads, Zipf {s['zipf']}, {s['write_share']:.0%} writes,"
        f" {s['connections']} connections closed loop; {s['duration']} s on (cold),"
        f" {s['off_duration']} s off; {workload.socket_timeout(s['redis_socket_timeout'])}"
    )
    for name in ("on", "off"):
        print(f"  caching {name}: {json.dumps(load[name])}")
    print(curve_table(report["curve"]))
    print(f"steady state (last third): {json.dumps(report['steady'])}")
    print(sql_table(report["sql"]["on"], report["sql"]["off"]))
    print(f"reductions: {json.dumps(report['sql']['on']['reductions'])}")
    print(f"app endpoint, last 60 s: {json.dumps(report['endpoint_last_60s'])}")
    for name in ("on", "off"):
        breaker = "; ".join(report["breaker"][name]) or "closed throughout"
        print(f"caching {name}, breaker: {breaker}")
        print(f"  switch audit rows: {json.dumps(report['switch_audit'][name])}")
        workload.print_log(report["app_log"][name])
    preamble.print_verdict(report)


def _backlog(figures: dict) -> str:
    return f"{figures['initiations_recorded_by_then']} / {figures['initiations_answered_by_then']}"


SQL_ROWS = [
    ("request path (app metrics)", lambda f: f["request_path_per_1000"]),
    ("request path (second count)", lambda f: f["second_count_request_per_1000"]),
    ("deferred, after the answer", lambda f: f["deferred_per_1000_answered"]),
    ("per initiation / text / post-call", lambda f: _per_request(f["by_group"])),
    ("deferred per recorded initiation", lambda f: f["deferred_per_recorded_initiation"]),
    ("all, every deferred write done (est.)", with_deferred),
    ("initiations recorded / answered by then", _backlog),
]


def sql_table(on: dict, off: dict) -> str:
    lines = [
        f"{'SQL statements per 1,000 webhook requests':<42} {'on (last third)':>20} {'off':>20}"
    ]
    for label, figure in SQL_ROWS:
        lines.append(f"{label:<42} {str(figure(on)):>20} {str(figure(off)):>20}")
    return "\n".join(lines)


def _per_request(groups: dict) -> str:
    return " / ".join(
        _cell(workload.ratio(g["sql"], g["requests"], 2), ".2f") for g in groups.values()
    )


COLUMNS = [
    ("t (s)", 6, "at_s", "d"),
    ("initiations", 11, "initiations", "d"),
    ("ctx lookups", 11, "ctx_lookups", "d"),
    ("ctx hit", 8, "ctx_hit_rate", ".1%"),
    ("all hit", 8, "all_hit_rate", ".1%"),
    ("ideal", 8, "ideal_hit_rate", ".1%"),
    ("gap (points)", 12, "gap_points", ".1f"),
]


def curve_table(points: list[dict]) -> str:
    lines = ["".join(f"{head:>{width + 1}}" for head, width, _, _ in COLUMNS)]
    for point in points:
        lines.append("".join(f"{_cell(point[k], form):>{w + 1}}" for _, w, k, form in COLUMNS))
    return "\n".join(lines)


def _cell(value, form: str) -> str:
    return "-" if value is None else format(value, form)
