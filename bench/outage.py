"""`python -m bench outage`: the cache Redis stopped, hung, restored from an older snapshot,
evicting and stalling, under load.

In one run: seed the population (100,000 leads); start a private redis-server (AOF on, so what
it held before a stop is there again after it; the machine's shared Redis is never touched) and
serve the app under daphne with it as REDIS_URL; drive the app from a separate process, open loop
(16 new requests/s by default), for 200 hot callers: call initiations and 15 % writes (texts and
post-call transcriptions, validly signed, that change what the caller's call context returns),
each acknowledged write followed by initiations for its caller 0, 0.3, 1 and 2 s later. Phases
(10 s each by default): caching on; then twice (`--cycles`): switched off, on again (the switch
service function, from this process), Redis stopped (SIGTERM), restarted, hung (SIGSTOP),
resumed (SIGCONT), a snapshot taken (SAVE), Redis killed and restarted from that snapshot
(older than every write since), eviction pressure (maxmemory just above use, allkeys-lru,
filler keys), intermittent stalls (DEBUG SLEEP 0.07 every 0.25 s), calm again; and last, the
replica (started with the primary, behind a TCP forwarder that is the app's REDIS_URL) hung so
that it lags, then the primary killed and the replica promoted behind the same address. Each kind of
phase is reported over both cycles together, so that drift in the machine's load weighs on every
kind alike. Meanwhile the alerts are polled every 0.5 s
(`/api/monitoring/alerts?state=all`, Bearer MONITORING_TOKEN).

Reported: per kind of phase, requests, non-2xx answers (connection errors included), p50/p99 of
initiations and writes, stale reads (as in bench.toggle: an answer for caller X, sent after a
write for X was acknowledged, that does not reflect it) and fallback answers; lost writes (every
text answered 2xx is a stored message, every post-call answered 2xx a completed conversation);
the breaker's transitions; and for each outage the redis_connection_lost alert's time to fire
after it began and to resolve after it ended. Requests sent while a phase's action (a flip, a
restart) was under way are counted apart ("during: <phase>").
Targets: no non-2xx; no lost write; p50 of initiations with the breaker open (Redis stopped, and
hung) within 1.2x of the switched-off phases'; no stale read after recovery (none at all, in fact).
"""

import json
import threading
import time
from datetime import datetime

from django.conf import settings
from django.test import override_settings

from bench import preamble, seed, workload
from monitoring.cache import gate, switch
from opsdash.settings import redis_cache_config
from tests.forwarder import Forwarder
from tests.redis_servers import RedisServer

RULE = workload.RULE
P50_RATIO_MAX = 1.2
QUICK = {"leads": 2_000, "small_leads": 100, "phase": 3.0, "warmup": 2.0, "cycles": 1}


def run(args) -> int:
    machine = preamble.start("outage", args, quick=QUICK)
    if machine is None:
        return 2
    people, phones = seed.ranked_population(args.leads, args.small_leads)
    server = RedisServer(persistent=True, args=("--enable-debug-command", "yes")).start()
    replica = RedisServer(args=("--replicaof", "127.0.0.1", str(server.port))).start()
    # The address the app uses: the primary behind it now, the replica after the failover.
    address = Forwarder(server.port)
    try:
        # This process flips the switch too: its gate must talk to the app's Redis (a new
        # generation plants its marker there).
        caches = {**settings.CACHES, "redis": redis_cache_config(address.url)}
        with override_settings(REDIS_URL=address.url, CACHES=caches):
            gate.reset()
            result = drive(Servers(server, replica, address), people, phones[: args.callers], args)
        gate.reset()
    finally:
        address.close()
        replica.close()
        server.close()
    report = build_report(args, people, result)
    report["machine"] = machine.summary()
    return preamble.finish(report, print_report)


class Servers:
    """The primary, its replica, and the address in front of them."""

    def __init__(self, primary: RedisServer, replica: RedisServer, address: Forwarder) -> None:
        self.primary, self.replica, self.address = primary, replica, address

    def fail_over(self) -> None:
        """The primary dies; the replica (lagging: it missed every write since it hung) is
        promoted behind the same address."""
        self.primary.kill()
        self.replica.resume()
        self.replica.client().replicaof("NO", "ONE")
        self.address.switch(self.replica.port)


def drive(servers: Servers, people, callers: list[str], args) -> dict:
    server = servers.primary
    with workload.served(args, servers.address.url) as app:

        def act() -> dict:
            phases = run_phases(server, args.phase, args.cycles)
            return {"phases": phases + run_failover(servers, args.phase)}

        return workload.under_load(app, plan(people, callers, args), args.warmup, act)


def plan(people, callers: list[str], args) -> dict:
    return {
        "connections": args.connections,
        "rate": args.rate,
        "max_seconds": args.warmup + (3 + 11 * args.cycles) * args.phase + 180,
        "org_number": people.org_number,
        "callers": callers,
        "zipf": 0.0,
        "seed": 40,
        "write_share": args.write_share,
        "verify_after": [0.0, 0.3, 1.0, 2.0],
    }


def run_phases(server: RedisServer, seconds: float, cycles: int) -> list[dict]:
    """Caching on, then `cycles` times: switched off, on again, Redis stopped, restarted, hung,
    resumed, a snapshot taken, Redis restarted from it (older than every write since), under
    eviction pressure, with intermittent stalls. Each phase: its action (timed), then `seconds`
    of load."""
    trouble = Trouble(server)
    cycle = [
        ("switched off", lambda: flip(False)),
        ("on again", lambda: flip(True)),
        ("Redis stopped", server.stop),
        ("Redis restarted", server.start),
        ("Redis hung", server.hang),
        ("Redis resumed", server.resume),
        ("snapshot taken", server.snapshot),
        ("restored from the snapshot", trouble.restore_snapshot),
        ("eviction pressure", trouble.start_eviction),
        ("intermittent stalls", trouble.start_stalls),
        ("calm again", trouble.calm),
    ]
    phases = []
    for name, action in [("caching on", None), *cycle * cycles]:
        began = time.time()
        if action is not None:
            action()
        start = time.time()
        workload.sleep_until(start + seconds)
        phases.append({"name": name, "action_at": began, "start": start, "end": time.time()})
    return phases


def run_failover(servers: Servers, seconds: float) -> list[dict]:
    """Last (the replica is the primary from then on): the replica lags, then takes over."""
    phases = []
    for name, action in (
        ("replica lagging", servers.replica.hang),
        ("failed over to the lagging replica", servers.fail_over),
    ):
        began = time.time()
        action()
        start = time.time()
        workload.sleep_until(start + seconds)
        phases.append({"name": name, "action_at": began, "start": start, "end": time.time()})
    return phases


class Trouble:
    """What production Redis does besides stopping and hanging, done to the private server."""

    STALL_SECONDS = 0.07  # above the 50 ms socket timeout, below two of them
    STALL_EVERY = 0.25

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def restore_snapshot(self) -> None:
        """SIGKILL, then start from the RDB snapshot taken earlier (not the append-only file,
        which has every write since): the older data set is back, on a new server run id."""
        self.server.kill()
        self.server.persistent = False
        self.server.start()
        self.server.client().config_set("appendonly", "yes")
        self.server.persistent = True

    def start_eviction(self) -> None:
        """maxmemory just above what is used, allkeys-lru, and filler keys written without
        pause: the server evicts the app's entries and tokens as it goes."""
        client = self.server.client()
        used = client.info("memory")["used_memory"]
        client.config_set("maxmemory", str(used + 2_000_000))
        client.config_set("maxmemory-policy", "allkeys-lru")
        self._run(self._fill)

    def start_stalls(self) -> None:
        self.calm()
        self._run(self._stall)

    def calm(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads, self._stop = [], threading.Event()
        try:
            self.server.client().config_set("maxmemory", "0")
        except Exception:  # noqa: BLE001 - the server may be the one being restarted
            pass

    def _run(self, target) -> None:
        thread = threading.Thread(target=target, args=(self._stop,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _fill(self, stop: threading.Event) -> None:
        client, n = self.server.client(), 0
        while not stop.is_set():
            try:
                client.set(f"bench:filler:{n}", b"x" * 20_000, ex=600)
            except Exception:  # noqa: BLE001 - a full server refusing is part of the phase
                pass
            n += 1
            time.sleep(0.001)

    def _stall(self, stop: threading.Event) -> None:
        client = self.server.client()
        while not stop.is_set():
            client.execute_command("DEBUG", "SLEEP", str(self.STALL_SECONDS))
            stop.wait(self.STALL_EVERY)


def flip(enabled: bool) -> None:
    """The switch service function (what `manage.py redis_switch` calls), from this process:
    a command's start-up would take one of the machine's two cores for seconds."""
    switch.set_caching(enabled, actor="bench", reason="bench outage", source="cli")


def phase_rows(records: list[list], phases: list[dict]) -> dict[str, dict]:
    """Per kind of phase, over every cycle; and apart, the requests sent while each kind's
    action was under way."""
    sent: dict[str, list] = {}
    during: dict[str, list] = {}
    for phase in phases:
        sent.setdefault(phase["name"], []).extend(
            workload.between(records, phase["start"], phase["end"])
        )
        busy = workload.between(records, phase["action_at"], phase["start"])
        during.setdefault(f"  during: {phase['name']}", []).extend(busy)
    rows = {name: workload.phase_stats(rs) for name, rs in sent.items()}
    rows |= {name: workload.phase_stats(rs) for name, rs in during.items() if rs}
    rows["all (warm-up included)"] = workload.phase_stats(records)
    return rows


def alert_timing(alerts: dict[int, dict], phases: list[dict]) -> list[dict]:
    """For each outage, the alert that fired during it: seconds from the outage's start to the
    alert firing, and from Redis coming back to the alert resolving (the alert's own times,
    and when the API first showed it)."""
    timings = []
    for phase, after in zip(phases, phases[1:], strict=False):
        if phase["name"] not in ("Redis stopped", "Redis hung"):
            continue
        began, ended = phase["action_at"], after["action_at"]
        alert = next((a for a in alerts.values() if _within(a["fired_at"], began, ended)), None)
        timing = {"outage": phase["name"], "alert": alert is not None}
        if alert is not None:
            timing["fire_s"] = _since(alert["fired_at"], began)
            timing["fire_seen_s"] = _seconds(alert.get("seen_firing"), began)
            timing["resolve_s"] = _since(alert["resolved_at"], ended)
            timing["resolve_seen_s"] = _seconds(alert.get("seen_resolved"), ended)
        timings.append(timing)
    return timings


def _within(iso: str | None, start: float, end: float) -> bool:
    return iso is not None and start <= _unix(iso) <= end


def _since(iso: str | None, start: float) -> float | None:
    return None if iso is None else round(_unix(iso) - start, 2)


def _seconds(at: float | None, start: float) -> float | None:
    return None if at is None else round(at - start, 2)


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def build_report(args, people, result: dict) -> dict:
    rows = phase_rows(result["records"], result["phases"])
    lost = workload.lost_writes(result["summary"])
    targets = build_targets(rows, lost)
    initiations_ok = sum(1 for r in result["records"] if r[2] == 0 and 200 <= r[3] < 300)
    return {
        "scenario": "outage",
        "settings": {k: v for k, v in vars(args).items() if k != "scenario"},
        "population": {"rows": people.rows, "seed_seconds": people.seconds},
        "rows": rows,
        "phases": [
            {**p, "action_s": round(p["start"] - p["action_at"], 2)} for p in result["phases"]
        ],
        "breaker": result["breaker"],
        "alerts": alert_timing(result["alerts"], result["phases"]),
        "lost_writes": lost,
        "stale_examples": result["summary"]["stale_examples"],
        "writes_refused": result["summary"]["refused"],
        "initiations_recorded": {"recorded": result["recorded"], "answered": initiations_ok},
        "app_log": result["app_log"],
        "switch_audit": workload.switch_audit(result["t0"]),
        "bump_reasons": workload.bump_reasons(result["t0"], result["phases"]),
        "targets": targets,
        "targets_met": all(t["met"] for t in targets.values()),
    }


def build_targets(rows: dict, lost: dict) -> dict:
    every = rows["all (warm-up included)"]
    off = rows["switched off"]["initiation"]["p50_ms"]
    ratios = {
        name: workload.ratio(rows[name]["initiation"]["p50_ms"], off, 2)
        for name in ("Redis stopped", "Redis hung")
    }
    troubled = (
        "Redis restarted",
        "Redis resumed",
        "restored from the snapshot",
        "eviction pressure",
        "intermittent stalls",
        "calm again",
        "failed over to the lagging replica",
    )
    after = sum(rows[name]["stale"] for name in troubled)
    return {
        "zero_non_2xx": {"value": every["non_2xx"], "met": every["non_2xx"] == 0},
        "zero_lost_writes": {"value": lost["lost"], "met": lost["lost"] == 0},
        "breaker_open_p50_vs_off": {
            "value": ratios,
            "max": P50_RATIO_MAX,
            "met": all(r is not None and r <= P50_RATIO_MAX for r in ratios.values()),
        },
        "zero_stale_after_recovery": {
            "value": after,
            "all_phases": every["stale"],
            "met": after == 0 and every["stale"] == 0,
        },
    }


def print_report(report: dict) -> None:
    s = report["settings"]
    print(
        f"\noutage: {s['callers']} hot callers of {s['leads']} leads, {s['rate']} new requests/s"
        f" ({s['write_share']:.0%} writes, each followed by 4 checking initiations),"
        f" {s['phase']} s per phase, {s['cycles']} cycles, private redis-server (AOF);"
        f" {workload.socket_timeout(s['redis_socket_timeout'])}"
    )
    print(workload.phase_table(report["rows"]))
    print(
        "phases: " + ", ".join(f"{p['name']} (action {p['action_s']} s)" for p in report["phases"])
    )
    print("breaker: " + "; ".join(report["breaker"]))
    for timing in report["alerts"]:
        print(f"alert {RULE}: {json.dumps(timing)}")
    for key in (
        "lost_writes",
        "writes_refused",
        "initiations_recorded",
        "switch_audit",
        "bump_reasons",
    ):
        print(f"{key}: {json.dumps(report[key])}")
    workload.print_log(report["app_log"])
    for example in report["stale_examples"][:5]:
        print(f"  stale: {json.dumps(example)}")
    preamble.print_verdict(report)
