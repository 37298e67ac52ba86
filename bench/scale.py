"""`python -m bench scale`: the app as 1, 2 and 4 daphne processes behind one port.

For each process count N: N daphne children, each on its own loopback port, all with the same
database, Redis key prefix, CHANNEL_REDIS_URL (channels_redis on a separate DB number of the
machine's Redis, never flushed), MONITORING_TOKEN and METRICS_FLUSH_SECONDS=1; in front of them
`bench/scale_balancer.py`, a round-robin TCP proxy on one port. Then:
  1. throughput: warm initiation (callers cached just before, each used once) through the
     balancer at a fixed concurrency;
  2. merged metrics: after METRICS_FLUSH_SECONDS + a margin, the performance endpoint
     (`/api/monitoring/metrics/performance?window=60s`) asked on EACH process's own port: every
     answer must list all N processes and the same initiation request count;
  3. switch propagation: the switch flipped (off, on, ...) through the service in this process;
     each process's own port is polled every 20 ms (the performance endpoint's `switch` is that
     process's copy; `/api/monitoring/switch` reads the database, so it cannot show
     propagation) until it reports the new state: the time until the last process does.
The machine has 2 cores: little throughput gain is expected beyond 2 processes.

With `--serve`, each count is `manage.py serve --processes N` instead: one socket shared by its N
daphne children, no balancer. Steps 2 and 3 then ask the one port (N times, on N connections):
each answer comes from whichever child accepted that connection.
"""

import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager

from django.conf import settings

from bench import initiation, preamble, processes, seed
from monitoring.cache import switch
from monitoring.models import MetricWindow

TOKEN = f"bench-{uuid.uuid4().hex}"
FLUSH_SECONDS = 1.0
POLL_SECONDS = 0.02
PERFORMANCE = "/api/monitoring/metrics/performance?window=60s"


def run(args) -> int:
    machine = preamble.start("scale", args)
    if machine is None:
        return 2
    people = seed.population(os.environ["DATABASE_URL"], args.leads, small_leads=1_000)
    initiation.set_caching(True)
    pool = initiation.Callers(people.callers)
    share = args.callers // len(args.processes)
    results, warmed = {}, {}
    for n in args.processes:
        # The previous count's flips bumped the generation (turning caching on does): every
        # context cached before is unreachable, so warm this count's callers now.
        warmed[n] = initiation.warm(people.org_number, pool.remaining()[:share])
        results[n] = run_count(n, pool, share, people, args)
    report = build_report(args, people, warmed, results)
    report["load_average_1min"] = machine.load_average()
    return preamble.finish(report, print_report)


def child_environment() -> dict[str, str]:
    return initiation.app_environment(os.environ["DATABASE_URL"]) | {
        "CHANNEL_REDIS_URL": os.environ["SCALE_CHANNEL_REDIS_URL"],
        "MONITORING_TOKEN": TOKEN,
        "METRICS_FLUSH_SECONDS": str(FLUSH_SECONDS),
    }


def run_count(n: int, pool: initiation.Callers, share: int, people, args) -> dict:
    os.environ["SCALE_CHANNEL_REDIS_URL"] = args.channel_redis_url
    initiation.set_caching(True)
    MetricWindow.objects.all().delete()  # the bench database's: only this run's processes
    balancer: dict = {}
    with ExitStack() as stack:
        if args.serve:
            front, pids = stack.enter_context(served(n, child_environment()))
            children = [(front, pid) for pid in pids]
        else:
            children = [
                stack.enter_context(processes.daphne(child_environment())) for _ in range(n)
            ]
        ports = [port for port, _ in children]
        names = sorted(f"{socket.gethostname()}:{pid}" for _, pid in children)
        if not args.serve:
            front = stack.enter_context(balancer_process(ports, balancer))
        cpu_before = [processes.cpu_seconds(pid) for _, pid in children]
        plan = initiation.load_plan(
            initiation.CASES[1], front, pool.remaining()[:share], people, args
        ) | {"call_sid_tag": f"scale{n}x"}
        load = processes.run_load(plan)
        pool.consume(load["sent"])
        seconds = args.warmup + args.duration
        used = [processes.cpu_seconds(pid) - cpu_before[i] for i, (_, pid) in enumerate(children)]
        load["app_cpu_cores"] = round(sum(used) / seconds, 2)
        # How evenly the load fell on the children (the kernel picks the acceptor with --serve).
        load["app_cpu_cores_each"] = [round(cpu / seconds, 2) for cpu in used]
        time.sleep(FLUSH_SECONDS + 1.5)
        merged = merged_metrics(ports, names)
        flips = [flip_and_poll(ports, i) for i in range(args.flips)]
    initiation.set_caching(True)
    load["balancer"] = balancer
    print(
        f"  {n} process(es): {load['rps']} req/s, p50 {load['p50_ms']} ms; merged metrics"
        f" {'ok' if merged['ok'] else 'NOT ok'}; propagation max"
        f" {max(f['max_ms'] for f in flips)} ms",
        flush=True,
    )
    return {"load": load, "merged": merged, "flips": flips, "processes": names}


@contextmanager
def balancer_process(ports: list[int], summary: dict):
    port = processes.free_port()
    targets = ",".join(f"127.0.0.1:{p}" for p in ports)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.scale_balancer", "--port", str(port), "--targets", targets],
        cwd=processes.ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the balancer did not start")
        yield port
    finally:
        processes.stop(child)
        summary.update(json.loads(child.stdout.read() or "{}"))


STARTED = re.compile(r"^worker \d+: daphne pid (\d+) started$", re.MULTILINE)


@contextmanager
def served(n: int, env: dict[str, str]):
    """`manage.py serve --processes n` on a free port: yields (port, the children's pids) once
    all n are started and the port answers. Its output (and the children's) goes to a file."""
    port = processes.free_port()
    command = [sys.executable, "manage.py", "serve", "--port", str(port), "--processes", str(n)]
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(
            command, cwd=processes.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            processes.wait_until_answers(port, child, log)
            deadline = time.monotonic() + 60
            while len(pids := started_pids(log)) < n and time.monotonic() < deadline:
                time.sleep(0.2)
            yield port, pids
        finally:
            processes.stop(child, timeout=30)


def started_pids(log) -> list[int]:
    log.seek(0)
    return [int(pid) for pid in STARTED.findall(log.read().decode(errors="replace"))]


def get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def merged_metrics(ports: list[int], names: list[str]) -> dict:
    """Each process's own answer: the processes it merged, and the initiation count it shows."""
    answers = []
    for port in ports:
        status, body = get(port, PERFORMANCE)
        group = body.get("route_groups", {}).get(initiation.METRICS_GROUP, {})
        answers.append(
            {
                "port": port,
                "status": status,
                "processes": body.get("processes", []),
                "initiation_requests": group.get("requests"),
                "ctx_hit_rate": body.get("cache_namespaces", {}).get("ctx", {}).get("hit_rate"),
            }
        )
    counts = {a["initiation_requests"] for a in answers}
    every = all(set(names) <= set(a["processes"]) for a in answers)
    return {
        "answers": answers,
        "all_list_every_process": every,
        "same_count": len(counts) == 1,
        "ok": every and len(counts) == 1 and all(a["status"] == 200 for a in answers),
    }


def flip_and_poll(ports: list[int], index: int) -> dict:
    """Flip the switch (off on even flips, on on odd ones); poll every process's own view."""
    enabled = index % 2 == 1
    seen: dict[int, float] = {}
    errors: list[str] = []
    started = time.perf_counter()
    switch.set_caching(enabled, actor="bench", reason="bench scale", source="cli")
    flipped = time.perf_counter()

    def poll(port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        while time.perf_counter() - started < 10:
            try:
                conn.request("GET", PERFORMANCE, headers=headers)
                response = conn.getresponse()
                body = json.loads(response.read())
            except (OSError, http.client.HTTPException, ValueError) as exc:
                errors.append(f"{port}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                continue
            if body.get("switch", {}).get("enabled") == enabled:
                seen[port] = time.perf_counter() - started
                break
            time.sleep(POLL_SECONDS)
        conn.close()

    threads = [threading.Thread(target=poll, args=(port,)) for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times = [round(seen[p] * 1000, 1) for p in ports if p in seen]
    return {
        "to": "on" if enabled else "off",
        "service_ms": round((flipped - started) * 1000, 1),
        "per_process_ms": times,
        "max_ms": max(times) if len(times) == len(ports) else None,
        "all_seen": len(times) == len(ports),
        "errors": errors[:3],
    }


def build_report(args, people, warmed: dict, results: dict) -> dict:
    base = results[args.processes[0]]["load"]["rps"]
    scaling = {n: round(r["load"]["rps"] / base, 2) if base else 0.0 for n, r in results.items()}
    maxima = [f["max_ms"] for r in results.values() for f in r["flips"]]
    seen = all(m is not None for m in maxima)
    limit = (switch_refresh() + 0.25) * 1000
    clean = all(r["load"]["non_2xx"] == 0 and r["load"]["errors"] == 0 for r in results.values())
    targets = {
        "propagation_every_process": {
            "max_ms": max(maxima) if seen else None,
            "median_ms": statistics.median(maxima) if seen else None,
            "limit_ms": limit,
            "met": seen and max(maxima) <= limit,
        },
        "merged_metrics_on_every_process": {
            "value": {n: r["merged"]["ok"] for n, r in results.items()},
            "met": all(r["merged"]["ok"] for r in results.values()),
        },
        "zero_non_2xx": {"value": clean, "met": clean},
    }
    return {
        "scenario": "scale",
        "settings": {k: getattr(args, k) for k in ("connections", "warmup", "duration", "flips")}
        | {"channel_redis_url": args.channel_redis_url, "metrics_flush_seconds": FLUSH_SECONDS}
        | {"switch_refresh_seconds": switch_refresh(), "cores": os.cpu_count()}
        | {"front": "serve --processes N" if args.serve else "balancer"},
        "population": {"rows": people.rows, "seed_seconds": people.seconds},
        "warmed": warmed,
        "counts": results,
        "throughput_vs_1": scaling,
        "targets": targets,
        "targets_met": all(t["met"] for t in targets.values()),
        "source": processes.source_state(),
    }


def switch_refresh() -> float:
    return float(settings.SWITCH_REFRESH_SECONDS)


def print_report(report: dict) -> None:
    s = report["settings"]
    print(
        f"\nscale: {s['connections']} connections through the {s['front']}, {s['warmup']} s warm-up"
        f" + {s['duration']} s per count; {s['cores']} cores;"
        f" SWITCH_REFRESH_SECONDS {s['switch_refresh_seconds']}"
    )
    head = ["procs", "req/s", "x vs 1", "p50 ms", "p95 ms", "non2xx", "app cpu", "ctx hit"]
    head += ["merged"]
    head += ["flip max ms (each flip)"]
    print(" ".join(f"{h:>8}" for h in head))
    for n, r in report["counts"].items():
        load = r["load"]
        flips = ",".join(str(f["max_ms"]) for f in r["flips"])
        cells = [n, f"{load['rps']:.0f}", report["throughput_vs_1"][n], f"{load['p50_ms']:.1f}"]
        cells += [f"{load['p95_ms']:.1f}", load["non_2xx"], f"{load['app_cpu_cores']:.2f}"]
        hit = r["merged"]["answers"][0]["ctx_hit_rate"]
        cells += ["-" if hit is None else f"{hit:.1%}", "ok" if r["merged"]["ok"] else "NOT ok"]
        cells += [flips]
        print(" ".join(f"{c!s:>8}" for c in cells))
    preamble.print_verdict(report)
