"""`python -m bench initiation`: the call-initiation webhook under load, served by daphne.

In one run: seed a realistic population (100,000 leads with history in one organization, two
smaller organizations), warm the call contexts of the callers the warm cases will use, then for
each case start the app under daphne (a subprocess), drive it from a separate load process at a
fixed concurrency for a fixed time, and stop it:
  (r) the server's floor: a bare ASGI app (bench/raw_asgi.py) under the same daphne;
  (a) the framework floor: the initiation URL with a wrong secret, answered 401 before any work;
  (b) initiation with a warm cache (caching on, each caller's context cached beforehand);
  (c) initiation with caching switched off (every answer loads the context from PostgreSQL);
  (b) and (c) again with the app reaching PostgreSQL through a delay proxy (+2 ms each way),
  at the fixed concurrency and (for their unloaded latency) with a single connection;
  (b new) as (b), but every caller is new (no lead yet; the "no lead" context warmed
  beforehand): each answer's recording creates a lead as well.
Each case gets callers no earlier case used: every answer records the call, a write that drops
(and may reload) the caller's cached context. The warm cases' callers are warmed first.
Targets: (b) >= 0.35x (r) and >= 0.8x (a) in requests/s; (b new) >= 0.8x (b), every
answered call recorded once the app has stopped; behind the proxy, (b)'s p50 at least 5x lower
than (c)'s; no non-2xx answer in any run but the deliberate 401s of (a).
"""

import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connections

from bench import preamble, processes, seed
from leads import services
from leads.models import WebhookEvent
from leads.webhooks import spool
from monitoring.cache import gate, switch
from monitoring.models import MetricWindow

SECRET = "bench-secret"
METRICS_GROUP = "webhook_initiation"  # the initiation's route group in the app's metrics
WARM_THREADS = 4
THROUGHPUT_MIN = 0.8
PROXY_P50_RATIO_MIN = 5.0
NEW_CALLERS_MIN = 0.8
RAW_FLOOR_MIN = 0.35  # warm initiation against a bare ASGI app under the same daphne
ONE = "proxy_c_vs_b_p50_one_connection"


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    secret: str
    caching: bool
    proxied: bool
    pool: str
    connections: int = 0  # 0: --connections
    worker: bool = False  # RECORD_WORKER on: a record_worker process records, the app spools
    application: str = "opsdash.asgi:application"


RAW_APP = "bench.raw_asgi:application"
CASES = [
    Case("r", "(r) raw ASGI app, same daphne", SECRET, True, False, "cold", application=RAW_APP),
    Case("a", "(a) framework floor (401 path)", "wrong-secret", True, False, "cold"),
    Case("b", "(b) initiation, warm cache", SECRET, True, False, "warm"),
    Case("b_w", "(b) warm, record_worker records", SECRET, True, False, "warm", worker=True),
    Case("b_proxy", "(b) warm cache, PostgreSQL +2 ms each way", SECRET, True, True, "warm"),
    Case("b_proxy_1", "(b) warm, +2 ms, 1 connection", SECRET, True, True, "warm", 1),
    Case("c_proxy_1", "(c) switch off, +2 ms, 1 connection", SECRET, False, True, "cold", 1),
    Case("c_proxy", "(c) switch off, PostgreSQL +2 ms each way", SECRET, False, True, "cold"),
    Case("c", "(c) initiation, switch off", SECRET, False, False, "cold"),
    Case("b_new", "(b new) warm cache, new callers", SECRET, True, False, "new"),
    Case("b_new_w", "(b new) new callers, record_worker", SECRET, True, False, "new", worker=True),
]
# New callers' numbers: outside the population's (+1555 2..4 nnnnnn).
NEW_CALLER = "+15558{:06d}"


class Callers:
    """Phone numbers handed out in order: a case gets only those no earlier case used."""

    def __init__(self, phones: list[str]) -> None:
        self.phones = phones
        self.used = 0

    def remaining(self) -> list[str]:
        return self.phones[self.used :] or self.phones

    def consume(self, n: int) -> None:
        self.used = min(len(self.phones), self.used + n)


def run(args) -> int:
    machine = preamble.start("initiation", args)
    if machine is None:
        return 2
    people = seed.population(os.environ["DATABASE_URL"], args.leads)
    if len(people.callers) < 2 * args.callers:
        raise RuntimeError(f"{len(people.callers)} callers with history: too few for --callers")
    pools = {"warm": Callers(people.callers[: args.callers])}
    pools["cold"] = Callers(people.callers[args.callers :])
    cases = [case for case in CASES if not args.cases or case.key in args.cases.split(",")]
    warmed = warm(people.org_number, pools["warm"].phones)
    pools["new"] = Callers([NEW_CALLER.format(n) for n in range(args.callers)])
    results = {}
    for case in cases:
        if case.pool == "new":  # just before: an earlier case must not have made them cold
            set_caching(True)  # an earlier case may have switched caching off
            warmed["new_contexts"] = warm(people.org_number, pools["new"].remaining())["contexts"]
        results[case.key] = run_case(case, pools, people, args)
    report = build_report(args, people, warmed, results)
    report["load_average_1min"] = machine.load_average()
    return preamble.finish(report, print_report)


# --- warming --------------------------------------------------------------------------------


def warm(org_number: str, callers: list[str]) -> dict:
    """Cache each caller's call context through the gate (the app's own read), in threads."""
    started = time.perf_counter()
    chunks = [callers[i::WARM_THREADS] for i in range(WARM_THREADS)]
    with ThreadPoolExecutor(WARM_THREADS) as pool:
        list(pool.map(lambda chunk: _warm_chunk(org_number, chunk), chunks))
    seconds = time.perf_counter() - started
    _expect_hits(org_number, callers[:: max(1, len(callers) // 200)])
    return {"contexts": len(callers), "seconds": round(seconds, 1)}


def _warm_chunk(org_number: str, callers: list[str]) -> None:
    try:
        for phone in callers:
            services.call_context(org_number, phone)
    finally:
        connections.close_all()


def _expect_hits(org_number: str, sample: list[str]) -> None:
    hits = gate.stats.snapshot().get("ctx", {}).get("hits", 0)
    for phone in sample:
        services.call_context(org_number, phone)
    now = gate.stats.snapshot()["ctx"]["hits"]
    # A shared machine can stall one Redis answer past its timeout: a miss or two is noise
    # (that caller's first answer is cold), more is a warming that failed.
    if now - hits < len(sample) * 0.98:
        raise RuntimeError(f"warming failed: {now - hits} hits for {len(sample)} warmed callers")


# --- one case -------------------------------------------------------------------------------


def run_case(case: Case, pools: dict, people: seed.Population, args) -> dict:
    set_caching(case.caching)
    recorded_before = initiations_recorded()
    proxy: dict = {}
    with database_url(case, args.delay_ms, proxy) as url, recorder(case, url) as worker:
        environment = app_environment(url, case.worker)
        with processes.daphne(environment, case.application) as (port, pid):
            cpu_before = processes.cpu_seconds(pid)
            callers = pools[case.pool]
            result = processes.run_load(load_plan(case, port, callers.remaining(), people, args))
            callers.consume(result["sent"])
            cpu = processes.cpu_seconds(pid) - cpu_before
            result["recorded_while_up"] = initiations_recorded() - recorded_before
        # Counted once the app has stopped (SIGTERM: it drains its recording first) and the
        # record worker has emptied the spool.
        if worker is not None:
            result["worker_cpu_cores"] = round(
                processes.cpu_seconds(worker.pid) / (args.warmup + args.duration), 2
            )
            wait_for_empty_spool()
    result["recorded"] = initiations_recorded() - recorded_before
    result["app"] = app_metrics(pid)
    result["app_cpu_cores"] = round(cpu / (args.warmup + args.duration), 2)
    result["load_cpu_cores"] = round(result["cpu_s"] / (args.warmup + args.duration), 2)
    if proxy:
        result["proxy"] = proxy
    print(f"  {case.label}: {result['rps']} req/s, p50 {result['p50_ms']} ms", flush=True)
    return result


def set_caching(enabled: bool) -> None:
    """Flip the switch through the service (as `manage.py redis_switch` does) when it differs.
    Each case starts a fresh daphne, which reads the switch when it starts."""
    if switch.read_state().enabled != enabled:
        switch.set_caching(enabled, actor="bench", reason="bench initiation", source="cli")


@contextmanager
def database_url(case: Case, delay_ms: float, proxy_summary: dict):
    """The app's DATABASE_URL: the bench database, directly or through the delay proxy."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    if not case.proxied:
        yield parts.geturl()
        return
    target = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    with processes.delay_proxy(target, delay_ms, proxy_summary) as (port, _):
        user = f"{parts.username}@" if parts.username else ""
        netloc = f"{user}127.0.0.1:{port}"
        yield parts._replace(netloc=netloc).geturl()


@contextmanager
def recorder(case: Case, database_url: str):
    """`manage.py record_worker` beside the app for a worker case, stopped by SIGTERM after."""
    if not case.worker:
        yield None
        return
    child = subprocess.Popen(
        [sys.executable, "manage.py", "record_worker"],
        cwd=processes.ROOT,
        env=app_environment(database_url, True),
        stdout=subprocess.DEVNULL,
    )
    try:
        yield child
    finally:
        processes.stop(child)


def wait_for_empty_spool(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.2)


def app_environment(database_url: str, worker: bool = False) -> dict[str, str]:
    return {
        **os.environ,
        "RECORD_WORKER": "true" if worker else "false",
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "DEBUG": "false",
        "SECRET_KEY": f"bench-{uuid.uuid4().hex}",
        "ELEVENLABS_INITIATION_SECRET": SECRET,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        # Plain HTTP on loopback, as behind a TLS-terminating proxy: no redirect to https (on by
        # default with DEBUG off).
        "SECURE_SSL_REDIRECT": "false",
    }


def load_plan(case: Case, port: int, callers: list[str], people, args) -> dict:
    return {
        "host": "127.0.0.1",
        "port": port,
        "path": processes.PROBE_PATH,
        "headers": {settings.ELEVENLABS_INITIATION_HEADER: case.secret},
        "connections": case.connections or args.connections,
        "warmup": args.warmup,
        "duration": args.duration,
        "called_number": people.org_number,
        "callers": callers,
        "call_sid_tag": f"{case.key.replace('_', '')}x",
    }


# --- what the app and the database saw ------------------------------------------------------


def app_metrics(pid: int) -> dict:
    """The app's own per-request metrics (monitoring windows it flushed every few seconds, so
    the last partial window is missing): SQL queries per initiation request on the request path,
    and the call-context cache's hits and misses (request path only)."""
    count = sql = hits = misses = 0
    for window in MetricWindow.objects.filter(process=f"{socket.gethostname()}:{pid}"):
        group = window.data.get("requests", {}).get(METRICS_GROUP, {})
        count, sql = count + group.get("count", 0), sql + group.get("sql", 0)
        ctx = window.data.get("cache", {}).get("ctx", {})
        hits, misses = hits + ctx.get("hits", 0), misses + ctx.get("misses", 0)
    return {
        "requests_in_windows": count,
        "sql_per_request": round(sql / count, 3) if count else None,
        "ctx_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
    }


def initiations_recorded() -> int:
    """Initiations whose deferred write (delivery row + conversation) has completed."""
    return WebhookEvent.objects.filter(
        event_type="conversation_initiation", status=WebhookEvent.Status.PROCESSED
    ).count()


# --- report ---------------------------------------------------------------------------------


def _ratio(results: dict, top: str, bottom: str, figure: str, digits: int) -> float | None:
    """results[top][figure] / results[bottom][figure], or None when either case did not run."""
    if top not in results or bottom not in results:
        return None
    below = results[bottom][figure]
    return round(results[top][figure] / below, digits) if below else 0.0


def build_report(args, people: seed.Population, warmed: dict, results: dict) -> dict:
    clean = {k: r["non_2xx"] == 0 and r["errors"] == 0 for k, r in results.items() if k != "a"}
    # Cases whose answers record nothing: the 401s of the floor, the bare ASGI app's.
    floor_only_401 = "a" not in results or (
        set(results["a"]["statuses"]) == {"401"} and results["a"]["errors"] == 0
    )
    targets = {}
    for name, top, bottom, figure, least in (
        ("b_vs_a_throughput", "b", "a", "rps", THROUGHPUT_MIN),
        ("b_vs_raw_asgi_throughput", "b", "r", "rps", RAW_FLOOR_MIN),
        ("proxy_c_vs_b_p50", "c_proxy", "b_proxy", "p50_ms", PROXY_P50_RATIO_MIN),
        ("new_vs_warm_throughput", "b_new", "b", "rps", NEW_CALLERS_MIN),
        ("new_with_worker_vs_warm_throughput", "b_new_w", "b", "rps", NEW_CALLERS_MIN),
    ):
        value = _ratio(results, top, bottom, figure, 3)
        if value is not None:
            targets[name] = {"value": value, "min": least, "met": value >= least}
    targets["zero_non_2xx"] = {"value": clean, "floor_only_401": floor_only_401}
    targets["zero_non_2xx"]["met"] = all(clean.values()) and floor_only_401
    # Over the run: a call a case's app left in the spool at its exit is recorded by the next
    # consumer (a later case's app or record worker). A fallback answer records nothing.
    answered = [r for k, r in results.items() if k not in ("a", "r")]
    sent = sum(r["requests"] + r["warmup_requests"] - r["fallbacks"] for r in answered)
    done = sum(r["recorded"] for r in answered)
    targets["all_recorded"] = {
        "value": f"{done}/{sent}",
        "spool_files_left": spool.pending(),
        "met": done == sent and not spool.pending(),
    }
    one = _ratio(results, "c_proxy_1", "b_proxy_1", "p50_ms", 2)
    return {
        "scenario": "initiation",
        "settings": {k: getattr(args, k) for k in ("connections", "warmup", "duration")}
        | {"warm_callers": args.callers, "delay_ms": args.delay_ms},
        "population": {"rows": people.rows, "seed_seconds": people.seconds},
        "warmed": warmed,
        "cases": results,
        "targets": targets,
        ONE: one,
        "targets_met": all(t["met"] for t in targets.values()),
        "source": processes.source_state(),
    }


def print_report(report: dict) -> None:
    settings_, people = report["settings"], report["population"]
    print(
        f"\ninitiation: {settings_['connections']} connections, {settings_['warmup']} s warm-up"
        f" + {settings_['duration']} s per case; seeded {people['rows']} in"
        f" {people['seed_seconds']} s; warmed {report['warmed']['contexts']} contexts in"
        f" {report['warmed']['seconds']} s"
    )
    print(table(report["cases"]))
    preamble.print_verdict(
        report, f"(no target) with 1 connection, (c)/(b) p50 behind the proxy: {report[ONE]}"
    )


# header, width, the figure from a case's result
COLUMNS = [
    ("req/s", 7, lambda r: f"{r['rps']:.0f}"),
    ("p50 ms", 7, lambda r: f"{r['p50_ms']:.2f}"),
    ("p95 ms", 7, lambda r: f"{r['p95_ms']:.2f}"),
    ("p99 ms", 7, lambda r: f"{r['p99_ms']:.2f}"),
    ("non2xx", 6, lambda r: r["non_2xx"]),
    ("fallbk", 6, lambda r: r["fallbacks"]),
    ("sql/req", 7, lambda r: _figure(r["app"]["sql_per_request"])),
    ("ctx hit", 7, lambda r: _figure(r["app"]["ctx_hit_rate"], ".1%")),
    ("recorded/answered", 17, lambda r: f"{r['recorded']}/{r['requests'] + r['warmup_requests']}"),
    ("app cpu", 7, lambda r: f"{r['app_cpu_cores']:.2f}"),
    ("load cpu", 8, lambda r: f"{r['load_cpu_cores']:.2f}"),
]


def table(results: dict) -> str:
    labels = {case.key: case.label for case in CASES}
    lines = [f"{'case':<44}" + "".join(f" {head:>{width}}" for head, width, _ in COLUMNS)]
    for key, r in results.items():
        cells = "".join(f" {figure(r):>{width}}" for _, width, figure in COLUMNS)
        lines.append(f"{labels[key]:<44}{cells}")
    return "\n".join(lines)


def _figure(value, form: str = ".2f") -> str:
    return "-" if value is None else format(value, form)
