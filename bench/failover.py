"""`python -m bench failover`: Redis under Sentinel fails over twice under the mixed load.

In one run: seed the population; start a primary, a replica and three sentinels (private
redis-server processes on free loopback ports, quorum 2, down-after 1 s, failover timeout 3 s;
tests/sentinel_servers.py) and serve the app under daphne with the redis+sentinel:// URL as
REDIS_URL; drive it as `outage` does (open loop, 16 new requests/s, 200 hot callers, 15 %
writes each followed by checking initiations 0, 0.3, 1 and 2 s later). Phases (15 s each by
default): caching on; then twice (`--failovers`): SENTINEL FAILOVER, and once the old primary
is demoted it is killed (SIGKILL); or with `--crash`, the primary killed and the sentinels left
to notice (down after 1 s) and elect the replica; load; the killed node started again, empty,
on its port (the sentinels make it a replica of the new primary), and load.

Reported: per phase, requests, non-2xx answers, p50/p99, stale reads and fallback answers (as in
`outage`); lost writes; for each failover the seconds until the sentinels named the new primary,
until the old one was demoted, and until caching resumed (a value entry of a generation newer
than the failover's stored on the new primary); the breaker's transitions; the
redis_connection_lost alert's firings; the audited generation bumps and their reasons.
Targets: no non-2xx, no lost write, no stale read.
"""

import json
import os
import threading
import time

from django.conf import settings

from bench import outage, preamble, seed, workload
from monitoring.cache import switch
from tests.redis_servers import RedisServer
from tests.sentinel_servers import SentinelSet

QUICK = {"leads": 2_000, "small_leads": 100, "phase": 6.0, "warmup": 2.0, "failovers": 2}
# A failover moves every process to another server; the app's settling time (a process seeing
# a server other than the one adopted moments ago bypasses instead of bumping back) is set
# below the time between the two failovers, as a Sentinel deployment would set it.
SETTLE_SECONDS = "5"


def run(args) -> int:
    machine = preamble.start("failover", args, quick=QUICK)
    if machine is None:
        return 2
    people, phones = seed.ranked_population(args.leads, args.small_leads)
    servers = SentinelSet().start()
    os.environ["REDIS_SERVER_SETTLE_SECONDS"] = SETTLE_SECONDS  # the app's, inherited
    try:
        result = drive(servers, people, phones[: args.callers], args)
    finally:
        servers.close()
    report = build_report(args, people, result)
    report["machine"] = machine.summary()
    return preamble.finish(report, print_report)


def drive(servers: SentinelSet, people, callers: list[str], args) -> dict:
    with workload.served(args, servers.url) as app:

        def act() -> dict:
            phases, failovers = run_phases(servers, args.phase, args.failovers, args.crash)
            return {"phases": phases, "failovers": failovers}

        return workload.under_load(app, plan(people, callers, args), args.warmup, act)


def plan(people, callers: list[str], args) -> dict:
    return {
        "connections": args.connections,
        "rate": args.rate,
        "max_seconds": args.warmup + (1 + 2 * args.failovers) * args.phase + 240,
        "org_number": people.org_number,
        "callers": callers,
        "zipf": 0.0,
        "seed": 41,
        "write_share": args.write_share,
        "verify_after": [0.0, 0.3, 1.0, 2.0],
    }


def run_phases(servers: SentinelSet, seconds: float, failovers: int, crash: bool):
    phases, timings = [], []
    began = time.time()
    workload.sleep_until(began + seconds)
    phases.append({"name": "caching on", "action_at": began, "start": began, "end": time.time()})
    for _ in range(failovers):
        began = time.time()
        timing = fail_over(servers, crash)
        start = time.time()
        workload.sleep_until(began + seconds)
        phases.append(
            {"name": "failed over", "action_at": began, "start": start, "end": time.time()}
        )
        timings.append(timing)
        began = time.time()
        replace_killed_node(servers, timing["old_port"])
        start = time.time()
        workload.sleep_until(start + seconds)
        phases.append(
            {"name": "replica back", "action_at": began, "start": start, "end": time.time()}
        )
    return phases, timings


def fail_over(servers: SentinelSet, crash: bool) -> dict:
    """SENTINEL FAILOVER, the old primary killed once demoted; or (`crash`) the primary
    killed and the sentinels left to elect another. Times from the action."""
    old_port = servers.primary_port()
    old = servers.nodes[old_port]
    generation = switch.read_state().generation
    began = time.monotonic()
    resumed: dict = {}
    watcher = threading.Thread(target=_watch_resumed, args=(servers, generation, began, resumed))
    watcher.start()
    if crash:
        old.kill()
        _wait(lambda: servers.primary_port() != old_port, 30)
        new_port, named = servers.primary_port(), time.monotonic() - began
        demoted = None
    else:
        new_port = servers.fail_over()
        named = time.monotonic() - began
        _wait(lambda: old.client().info("replication")["role"] == "slave", 20)
        demoted = round(time.monotonic() - began, 2)
        old.kill()
    watcher.join(60)
    return {
        "old_port": old_port,
        "new_port": new_port,
        "named_s": round(named, 2),
        "demoted_s": demoted,
        "caching_resumed_s": resumed.get("seconds"),
        "generation": {"before": generation, "after": resumed.get("generation")},
    }


def _watch_resumed(servers: SentinelSet, generation: int, began: float, found: dict) -> None:
    """Until a value entry of a generation newer than `generation` is stored on the primary
    the sentinels name."""
    prefix = settings.REDIS_KEY_PREFIX
    deadline = began + 60
    while time.monotonic() < deadline:
        try:
            current = switch.read_state().generation
            node = servers.nodes[servers.primary_port()]
            if current > generation and next(
                node.client().scan_iter(f"{prefix}:{current}:v:*", count=1000), None
            ):
                found.update(seconds=round(time.monotonic() - began, 2), generation=current)
                return
        except Exception:  # noqa: BLE001 - a node or sentinel mid-failover; look again
            pass
        time.sleep(0.1)


def replace_killed_node(servers: SentinelSet, port: int) -> None:
    """The killed node started again on its port, empty: the sentinels make it a replica."""
    node = RedisServer()
    node.port = port
    node.start()
    servers.nodes[port] = node
    servers.wait_until_settled(timeout=30)


def _wait(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - mid-failover
            pass
        time.sleep(0.05)


def build_report(args, people, result: dict) -> dict:
    rows = outage.phase_rows(result["records"], result["phases"])
    lost = workload.lost_writes(result["summary"])
    every = rows["all (warm-up included)"]
    targets = {
        "zero_non_2xx": {"value": every["non_2xx"], "met": every["non_2xx"] == 0},
        "zero_lost_writes": {"value": lost["lost"], "met": lost["lost"] == 0},
        "zero_stale_reads": {"value": every["stale"], "met": every["stale"] == 0},
    }
    alerts = [
        {k: a.get(k) for k in ("started_at", "fired_at", "resolved_at")}
        for a in result["alerts"].values()
    ]
    return {
        "scenario": "failover",
        "settings": {k: v for k, v in vars(args).items() if k != "scenario"},
        "population": {"rows": people.rows, "seed_seconds": people.seconds},
        "rows": rows,
        "failovers": result["failovers"],
        "breaker": result["breaker"],
        "alerts": alerts,
        "lost_writes": lost,
        "stale_examples": result["summary"]["stale_examples"],
        "app_log": result["app_log"],
        "switch_audit": workload.switch_audit(result["t0"]),
        "bump_reasons": workload.bump_reasons(result["t0"], result["phases"]),
        "targets": targets,
        "targets_met": all(t["met"] for t in targets.values()),
    }


def print_report(report: dict) -> None:
    s = report["settings"]
    print(
        f"\nfailover: {s['callers']} hot callers of {s['leads']} leads, {s['rate']} new "
        f"requests/s ({s['write_share']:.0%} writes), {s['phase']} s per phase, "
        f"{s['failovers']} failovers ({'primary killed' if s['crash'] else 'SENTINEL FAILOVER'}),"
        " primary + replica + 3 sentinels (quorum 2); "
        f"{workload.socket_timeout(s['redis_socket_timeout'])}"
    )
    print(workload.phase_table(report["rows"]))
    for n, timing in enumerate(report["failovers"], 1):
        print(f"failover {n}: {json.dumps(timing)}")
    print("breaker: " + "; ".join(report["breaker"]))
    print(f"alerts {outage.RULE}: {json.dumps(report['alerts'])}")
    for key in ("lost_writes", "switch_audit", "bump_reasons"):
        print(f"{key}: {json.dumps(report[key])}")
    workload.print_log(report["app_log"])
    for example in report["stale_examples"][:5]:
        print(f"  stale: {json.dumps(example)}")
    preamble.print_verdict(report)
