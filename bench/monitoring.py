"""`python -m bench monitoring`: what recording requests costs, and how fast the Redis alert is.

In one run:
  1. In-process, interleaved (bench.timing): `recorder.record(...)` alone, and the request
     metrics middleware around a trivial view against the view called directly, async (as daphne
     serves it) and sync; the middleware's cost includes its contextvar and route-group lookup.
  2. The initiation webhook under daphne with metrics on (METRICS_ENABLED=true) and off: a fresh
     daphne per run, driven from the load process (bench.loadgen) at a fixed concurrency for a
     fixed time, on and off alternating, round after round. Signed initiations on a warm cache,
     and the 401 floor (wrong secret), where recording is a bigger share of the work. On a
     private redis-server; a run whose cache was disturbed (Redis error, breaker, generation
     bump) is marked, and the target is judged on the undisturbed runs when there are some.
  3. With the default alert settings, daphne on a private redis-server: the time from Redis
     stopped (SIGTERM, then once hung with SIGSTOP) to `redis_connection_lost` firing in
     /api/monitoring/alerts?state=firing (polled every 100 ms), and from Redis back (a new
     redis-server on the same port, or SIGCONT) to the alert resolved.
Targets: metrics-on req/s of the signed initiation >= 0.95x metrics-off (ratio of the means);
the alert fires and resolves within 10 s (the slowest outage of the run).
"""

import http.client
import json
import os
import random
import socket
import statistics
import time
import uuid
from contextlib import contextmanager
from datetime import datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import override_settings

from bench import preamble, processes, seed, timing
from bench.initiation import SECRET, app_environment, app_metrics, warm
from monitoring.cache import switch
from monitoring.metrics import middleware
from monitoring.metrics.recorder import Recorder
from monitoring.models import MetricWindow, SwitchAudit
from opsdash.settings import redis_cache_config
from tests.redis_servers import RedisServer

PATH = processes.PROBE_PATH
GROUP = "webhook_initiation"
KINDS = {"initiation": SECRET, "floor": "wrong-secret"}  # request kind -> the secret it sends
THROUGHPUT_MIN = 0.95
ALERT_MAX_SECONDS = 10.0
RULE = "redis_connection_lost"
POLL_SECONDS = 0.1
GIVE_UP_SECONDS = 60.0
TOKEN = f"bench-{uuid.uuid4().hex}"


def run(args) -> int:
    machine = preamble.start("monitoring", args)
    if machine is None:
        return 2
    in_process = recording_cost(args)
    people = seed.population(os.environ["DATABASE_URL"], args.leads, small_leads=500)
    with private_cache():
        warmth = Warmth(people)
        load = {kind: throughput(kind, warmth, args) for kind in KINDS}
    alerts = alert_timing(args)
    report = build_report(args, in_process, warmth.warmed, load, alerts)
    report["load_average_1min"] = machine.load_average()
    return preamble.finish(report, print_report)


# --- 1. in-process ---------------------------------------------------------------------------


def drive(coroutine):
    """Run a coroutine that never suspends (a trivial view) to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine suspended")


def recording_cost(args) -> dict:
    if not settings.METRICS_ENABLED:
        raise RuntimeError("METRICS_ENABLED=false in the bench process: nothing to time")
    fresh, response = Recorder(), HttpResponse(status=200)
    request = HttpRequest()
    request.method, request.path = "POST", PATH
    group = middleware.route_group

    def view(request):
        return response

    async def async_view(request):
        return response

    sync_mw = middleware.RequestMetricsMiddleware(view)
    async_mw = middleware.RequestMetricsMiddleware(async_view)
    cases = [
        timing.Case("floor", "(0) an empty call (the timing floor)", lambda i: None),
        timing.Case(
            "record",
            "(1) recorder.record(...) alone",
            lambda i: fresh.record(GROUP, 200, 0.0042, 0),
        ),
        timing.Case("group", "(2) route_group(), the initiation path", lambda i: group(PATH)),
        # "/" is in no route group: every prefix is tried.
        timing.Case("group_none", "(3) route_group(), a path in no group", lambda i: group("/")),
        timing.Case(
            "view_async", "(4) trivial async view, direct", lambda i: drive(async_view(request))
        ),
        timing.Case(
            "mw_async", "(5) (4) through the middleware", lambda i: drive(async_mw(request))
        ),
        timing.Case("view_sync", "(6) trivial sync view, direct", lambda i: view(request)),
        timing.Case("mw_sync", "(7) (6) through the middleware", lambda i: sync_mw(request)),
    ]
    middleware.recorder.take()
    timing.interleave(cases, args.iterations, args.call_warmup, args.block)
    recorded = middleware.recorder.take()[2].get(GROUP, {}).get("count", 0)
    calls = sum(case.calls for case in cases if case.key.startswith("mw_"))
    if recorded != calls:
        raise RuntimeError(f"the middleware recorded {recorded} of {calls} requests")
    results = {case.key: case.summary() for case in cases}
    return {
        "cases": results,
        "record_us": _difference(results["record"], results["floor"]),
        "middleware_async_us": _difference(results["mw_async"], results["view_async"]),
        "middleware_sync_us": _difference(results["mw_sync"], results["view_sync"]),
    }


def _difference(case: dict, base: dict) -> dict:
    return {
        "median": round(case["median_us"] - base["median_us"], 2),
        "mean": round(case["mean_us"] - base["mean_us"], 2),
    }


# --- 2. throughput, metrics on vs off --------------------------------------------------------


@contextmanager
def private_cache():
    """The bench process and the apps it serves on a private redis-server: the shared one runs
    other people's tests, whose SCANs stall it for tens of ms (its SLOWLOG), close to the app's
    50 ms socket timeout."""
    server = RedisServer().start()
    redis_caches = {**settings.CACHES, "redis": redis_cache_config(server.url)}
    try:
        with override_settings(REDIS_URL=server.url, CACHES=redis_caches):
            yield
    finally:
        server.close()


class Warmth:
    """Every caller's context cached (through the gate, as the app reads it), and cached again
    before a run whenever the generation moved: a bump drops every entry at once."""

    def __init__(self, people: seed.Population) -> None:
        self.people = people
        self.generation: int | None = None
        self.warmed: list[dict] = []

    def ensure(self) -> None:
        for _ in range(3):
            generation = switch.view.refresh().generation
            if generation == self.generation:
                return
            try:
                self.warmed.append(warm(self.people.org_number, self.people.callers))
                self.generation = generation
            except RuntimeError as exc:  # a Redis timeout opened the breaker: wait it out
                print(f"  warming again: {exc}", flush=True)
                time.sleep(settings.REDIS_BREAKER_COOLDOWN)


def throughput(kind: str, warmth: Warmth, args) -> dict:
    """Rounds of (on, off) runs, each on a warm cache. The ratio is given over every run, and
    over the runs whose cache was not disturbed (a Redis error, the breaker opening or a
    generation bump: events unrelated to metrics that swing a run's throughput)."""
    runs = []
    for n in range(args.rounds):
        for metrics in (True, False):
            if kind == "initiation":
                warmth.ensure()
            runs.append(load_run(kind, metrics, n, warmth.people, args))
    clean = [r for r in runs if not r["disturbed"]]
    pairs = [round(a["rps"] / b["rps"], 3) for a, b in zip(runs[::2], runs[1::2], strict=True)]
    return {"runs": runs, **compare(runs), "pair_ratios": pairs, "undisturbed": compare(clean)}


def compare(runs: list[dict]) -> dict:
    on = [r for r in runs if r["metrics"] == "on"]
    off = [r for r in runs if r["metrics"] == "off"]
    if not (on and off):
        return {"on_runs": len(on), "off_runs": len(off), "ratio": None}
    on_rps, off_rps = _mean(on, "rps"), _mean(off, "rps")
    return {
        "on_runs": len(on),
        "off_runs": len(off),
        "on_mean_rps": round(on_rps, 1),
        "off_mean_rps": round(off_rps, 1),
        "ratio": round(on_rps / off_rps, 3),
        "on_cpu_ms_per_request": round(_mean(on, "app_cpu_ms_per_request"), 3),
        "off_cpu_ms_per_request": round(_mean(off, "app_cpu_ms_per_request"), 3),
    }


def _mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rows)


def load_run(kind: str, metrics: bool, n: int, people, args) -> dict:
    state = "on" if metrics else "off"
    env = app_environment(os.environ["DATABASE_URL"])  # with the private REDIS_URL
    env["METRICS_ENABLED"] = "true" if metrics else "false"
    generation = switch.read_state().generation
    with processes.daphne(env) as (port, pid):
        cpu_before = processes.cpu_seconds(pid)
        plan = {
            "host": "127.0.0.1",
            "port": port,
            "path": PATH,
            "headers": {settings.ELEVENLABS_INITIATION_HEADER: KINDS[kind]},
            "connections": args.connections,
            "warmup": args.warmup,
            "duration": args.duration,
            "called_number": people.org_number,
            "callers": people.callers,
            "call_sid_tag": f"m{kind[0]}{state}{n}x",
        }
        result = processes.run_load(plan)
        cpu = processes.cpu_seconds(pid) - cpu_before
    answered = result["requests"] + result["warmup_requests"]
    row = {"kind": kind, "metrics": state, "round": n + 1}
    row |= {k: result[k] for k in ("rps", "p50_ms", "p95_ms", "statuses", "errors", "fallbacks")}
    row["app_cpu_ms_per_request"] = round(cpu * 1000 / answered, 3) if answered else 0.0
    row["app"] = app_metrics(pid)
    row["cache_events"] = events = cache_events(pid, generation)
    row["disturbed"] = bool(events["redis_errors"] or events["breaker_opened"] or events["bumps"])
    note = f"; cache disturbed: {json.dumps(events)}" if row["disturbed"] else ""
    print(f"  {kind}, metrics {state}, round {n + 1}: {row['rps']} req/s{note}", flush=True)
    return row


def cache_events(pid: int, generation: int) -> dict:
    """What disturbed the cache during a run: Redis errors, breaker openings and bypassed reads
    in the process's windows (the last partial window is not flushed), and the generation bumps
    (every cached entry dropped at once) anyone made since the run started, by reason."""
    errors = bypassed = opened = 0
    for window in MetricWindow.objects.filter(process=f"{socket.gethostname()}:{pid}"):
        for ns in window.data.get("cache", {}).values():
            errors, bypassed = errors + ns.get("errors", 0), bypassed + ns.get("bypassed", 0)
        changes = window.data.get("breaker", {}).get("changes", [])
        opened += sum(1 for _, _, new in changes if new == "open")
    bumps: dict[str, int] = {}
    for action in SwitchAudit.objects.filter(generation__gt=generation).values_list(
        "action", flat=True
    ):
        bumps[action] = bumps.get(action, 0) + 1
    return {"redis_errors": errors, "breaker_opened": opened, "bypassed": bypassed, "bumps": bumps}


# --- 3. the Redis alert ----------------------------------------------------------------------


class Api:
    """The served app's monitoring API, with the bearer token."""

    def __init__(self, port: int) -> None:
        self.port = port

    def get(self, path: str) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def alert(self, state: str) -> dict | None:
        """The newest `redis_connection_lost` alert in `state`, or None."""
        alerts = self.get(f"/api/monitoring/alerts?state={state}")["alerts"]
        return next((a for a in alerts if a["rule"] == RULE), None)


def alert_timing(args) -> dict:
    server = RedisServer().start()
    env = app_environment(os.environ["DATABASE_URL"]) | {
        "REDIS_URL": server.url,
        "MONITORING_TOKEN": TOKEN,
    }
    outages = []
    try:
        with processes.daphne(env) as (port, pid):
            api = Api(port)
            ready_s = wait_for_evaluator(api, f"{socket.gethostname()}:{pid}")
            for kind in ["stopped"] * args.outages + ["hung"]:
                outages.append(outage(api, server, kind))
                print(
                    f"  Redis {kind}: fired after {outages[-1]['fire_s']} s,"
                    f" resolved {outages[-1]['resolve_s']} s after it was back",
                    flush=True,
                )
    finally:
        server.close()
    fires = [o["fire_s"] for o in outages]
    resolves = [o["resolve_s"] for o in outages]
    return {
        "evaluator_ready_s": ready_s,
        "outages": outages,
        "max_fire_s": None if None in fires else max(fires),
        "max_resolve_s": None if None in resolves else max(resolves),
    }


def wait_for_evaluator(api: Api, holder: str) -> float:
    """Until this daphne's evaluator holds the lease (the last run's may hold it until it lapses),
    Redis answers and caching is on."""
    started = time.monotonic()
    while time.monotonic() - started < GIVE_UP_SECONDS:
        checks = api.get("/api/monitoring/health")["checks"]
        evaluator = checks["evaluator"].get("observed", {})
        redis_up = checks["redis"]["observed"].get("connected")
        if (
            evaluator.get("holder") == holder
            and redis_up
            and checks["switch"]["observed"]["enabled"]
        ):
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    raise RuntimeError("the evaluator never took the lease")


def outage(api: Api, server: RedisServer, kind: str) -> dict:
    """Redis goes down, and comes back a random while after the alert fired: each change at any
    phase of the evaluator's rounds (else it would come back just after a round, every time)."""
    time.sleep(random.uniform(0, settings.MONITORING_EVALUATE_SECONDS))
    down_wall, down = time.time(), time.monotonic()
    server.stop() if kind == "stopped" else server.hang()
    fired = poll(lambda: api.alert("firing"))
    fire_s = _since(down) if fired else None
    time.sleep(random.uniform(0, settings.MONITORING_EVALUATE_SECONDS))
    back_started = time.monotonic()
    server.start() if kind == "stopped" else server.resume()
    back_wall, back = time.time(), time.monotonic()
    gone = poll(lambda: api.alert("firing") is None)
    resolve_s = _since(back) if gone else None
    resolved = api.alert("resolved") if gone else None
    same = resolved is not None and fired is not None and resolved["id"] == fired["id"]
    return {
        "kind": kind,
        "fire_s": fire_s,
        "resolve_s": resolve_s,
        "restart_s": round(back - back_started, 3),
        # The same spans by the app's own timestamps (the evaluator's round that decided).
        "app_fire_s": _after(fired and fired["fired_at"], down_wall),
        "app_resolve_s": _after(same and resolved["resolved_at"], back_wall),
    }


def poll(condition):
    """condition() every POLL_SECONDS until it is truthy (returned), or None after a minute."""
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(POLL_SECONDS)
    return None


def _since(started: float) -> float:
    return round(time.monotonic() - started, 2)


def _after(iso: str | None, wall: float) -> float | None:
    return round(datetime.fromisoformat(iso).timestamp() - wall, 2) if iso else None


# --- report ----------------------------------------------------------------------------------


def build_report(args, in_process: dict, warmed: list[dict], load: dict, alerts: dict) -> dict:
    for figures in load.values():
        # Judged on the undisturbed runs when there are some of each, else on them all.
        figures["basis"] = "undisturbed" if figures["undisturbed"]["ratio"] else "all runs"
        # The ratio the in-process cost predicts: daphne's CPU per request with metrics off,
        # against the same plus the middleware's (mean) cost.
        cpu_ms = figures["off_cpu_ms_per_request"]
        added_ms = in_process["middleware_async_us"]["mean"] / 1000
        figures["predicted_ratio"] = round(cpu_ms / (cpu_ms + added_ms), 4)
    initiation = load["initiation"]
    ratio = (initiation["undisturbed"] if initiation["undisturbed"]["ratio"] else initiation)[
        "ratio"
    ]
    fire, resolve = alerts["max_fire_s"], alerts["max_resolve_s"]
    targets = {
        "initiation_on_vs_off_rps": {
            "value": ratio,
            "basis": initiation["basis"],
            "all_runs": initiation["ratio"],
            "min": THROUGHPUT_MIN,
            "met": ratio >= THROUGHPUT_MIN,
        },
        "redis_alert_fire_s": {
            "value": fire,
            "max": ALERT_MAX_SECONDS,
            "met": fire is not None and fire <= ALERT_MAX_SECONDS,
        },
        "redis_alert_resolve_s": {
            "value": resolve,
            "max": ALERT_MAX_SECONDS,
            "met": resolve is not None and resolve <= ALERT_MAX_SECONDS,
        },
    }
    names = ["connections", "warmup", "duration", "rounds", "leads", "outages", "iterations"]
    return {
        "scenario": "monitoring",
        "settings": {name: getattr(args, name) for name in names}
        | {
            "evaluate_seconds": settings.MONITORING_EVALUATE_SECONDS,
            "redis_down_for_seconds": settings.ALERT_REDIS_DOWN_FOR_SECONDS,
            "poll_seconds": POLL_SECONDS,
        },
        "in_process": in_process,
        "warmed": warmed,
        "throughput": load,
        "alerts": alerts,
        "targets": targets,
        "targets_met": all(t["met"] for t in targets.values()),
        "source": processes.source_state(),
    }


def print_report(report: dict) -> None:
    s, cost = report["settings"], report["in_process"]
    print(f"\n1. recording, in-process: {s['iterations']} timed calls per case, interleaved")
    print(timing.table(list(cost["cases"].values())))
    for key, label in [
        ("record_us", "recorder.record() - (0)"),
        ("middleware_async_us", "middleware, async: (5) - (4)"),
        ("middleware_sync_us", "middleware, sync: (7) - (6)"),
    ]:
        print(f"{label:<34} median {cost[key]['median']:.2f} µs, mean {cost[key]['mean']:.2f} µs")
    print(
        f"\n2. daphne, {s['connections']} connections, {s['warmup']} s warm-up + {s['duration']}"
        f" s per run, a fresh daphne per run, on and off alternating; caller contexts warmed"
        f" {len(report['warmed'])} time(s), {[w['seconds'] for w in report['warmed']]} s"
    )
    print(
        f"{'run':<36} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'cpu ms/req':>10}"
        f" {'recorded':>8} {'ctx hit':>7} {'disturbed':>9}"
    )
    for kind, figures in report["throughput"].items():
        for r in figures["runs"]:
            name = f"{kind}, metrics {r['metrics']}, round {r['round']}"
            disturbed = "yes" if r["disturbed"] else ""
            print(
                f"{name:<36} {r['rps']:>7.1f} {r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f}"
                f" {r['app_cpu_ms_per_request']:>10.3f} {r['app']['requests_in_windows']:>8}"
                f" {_figure(r['app']['ctx_hit_rate'], '.1%'):>7} {disturbed:>9}"
            )
        comparisons = [("all runs", figures)]
        if any(r["disturbed"] for r in figures["runs"]):
            comparisons.append(("undisturbed", figures["undisturbed"]))
        for name, c in comparisons:
            if c["ratio"] is None:
                print(f"{kind}, {name}: {c['on_runs']} on, {c['off_runs']} off: no ratio")
                continue
            print(
                f"{kind}, {name} ({c['on_runs']} on, {c['off_runs']} off): on"
                f" {c['on_mean_rps']} / off {c['off_mean_rps']} req/s = {c['ratio']}; daphne"
                f" CPU per request {c['on_cpu_ms_per_request']} ms on,"
                f" {c['off_cpu_ms_per_request']} off"
            )
        print(
            f"{kind}: on/off by round {figures['pair_ratios']}; predicted from the in-process"
            f" cost: {figures['predicted_ratio']}"
        )
    alerts = report["alerts"]
    print(
        f"\n3. Redis alert, default settings (evaluate every {s['evaluate_seconds']} s, for"
        f" {s['redis_down_for_seconds']} s), polled every {s['poll_seconds']} s;"
        f" evaluator ready after {alerts['evaluator_ready_s']} s"
    )
    print(f"{'outage':<10} {'fire s':>7} {'resolve s':>9} {'app fire s':>10} {'app resolve s':>13}")
    for o in alerts["outages"]:
        print(
            f"{o['kind']:<10} {_figure(o['fire_s']):>7} {_figure(o['resolve_s']):>9}"
            f" {_figure(o['app_fire_s']):>10} {_figure(o['app_resolve_s']):>13}"
        )
    print()
    floor = report["throughput"]["floor"]
    preamble.print_verdict(report, f"(no target) floor on/off req/s, all runs: {floor['ratio']}")


def _figure(value, form: str = ".2f") -> str:
    return "-" if value is None else format(value, form)
