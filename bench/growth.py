"""`python -m bench growth`: initiation latency as the data grows from 10,000 to 1,000,000 leads.

One organization; its leads are added with COPY (every tenth with one conversation and two
messages): first 10,000, measured; then up to 1,000,000, measured again. At each size a fresh
daphne is driven at a low fixed concurrency (latency, not saturation) in two cases:
  warm: callers whose call context was loaded (cached) through the app's gate beforehand;
  cold: callers never requested before, with caching on (each a miss: the indexed read path).
Every answer records the call (a write that drops the caller's cached context), so each caller
is used once. Target: p50 flat within 1.3x (warm@1M vs warm@10k, cold@1M vs cold@10k).
"""

import json
import os
import random

from django.conf import settings

from bench import initiation, preamble, processes, seed

RATIO_MAX = 1.3


def run(args) -> int:
    machine = preamble.start("growth", args)
    if machine is None:
        return 2
    url = os.environ["DATABASE_URL"]
    initiation.set_caching(True)
    org_id = seed.growth_organization(url)
    rng = random.Random(11)
    results, seeded, done = {}, {}, 0
    for size in args.sizes:
        seeded[size] = seed.add_growth_leads(url, org_id, done, size)
        done = size
        print(f"  {size} leads: seeded {json.dumps(seeded[size])}", flush=True)
        numbers = rng.sample(range(size), min(size, 2 * args.callers))
        phones = [seed.growth_phone(n) for n in numbers]
        warm_pool, cold_pool = phones[: args.callers], phones[args.callers :]
        warmed = initiation.warm(population_number(), warm_pool)
        for case, pool in (("warm", warm_pool), ("cold", cold_pool)):
            results[f"{case}@{size}"] = run_case(case, size, pool, args) | {"warmed": warmed}
    report = build_report(args, seeded, results)
    report["load_average_1min"] = machine.load_average()
    return preamble.finish(report, print_report)


def population_number() -> str:
    return seed.MAIN_NUMBER


def run_case(case: str, size: int, callers: list[str], args) -> dict:
    env = initiation.app_environment(os.environ["DATABASE_URL"])
    with processes.daphne(env) as (port, pid):
        plan = {
            "host": "127.0.0.1",
            "port": port,
            "path": processes.PROBE_PATH,
            "headers": {settings.ELEVENLABS_INITIATION_HEADER: initiation.SECRET},
            "connections": args.connections,
            "warmup": args.warmup,
            "duration": args.duration,
            "called_number": population_number(),
            "callers": callers,
            "call_sid_tag": f"g{case}{size}x",
        }
        result = processes.run_load(plan)
    result["app"] = initiation.app_metrics(pid)
    print(
        f"  {case}@{size}: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms,"
        f" {result['rps']} req/s, reused {result['callers_reused']}",
        flush=True,
    )
    return result


def build_report(args, seeded: dict, results: dict) -> dict:
    small, big = args.sizes[0], args.sizes[-1]
    targets = {}
    for case in ("warm", "cold"):
        a, b = results[f"{case}@{small}"], results[f"{case}@{big}"]
        ratio = round(b["p50_ms"] / a["p50_ms"], 3) if a["p50_ms"] else 0.0
        p95 = round(b["p95_ms"] / a["p95_ms"], 3) if a["p95_ms"] else 0.0
        clean = all(r["non_2xx"] == 0 and r["errors"] == 0 for r in (a, b))
        targets[f"{case}_p50_{big}_vs_{small}"] = {
            "value": ratio,
            "max": RATIO_MAX,
            "p95_ratio": p95,
            "no_errors": clean,
            "met": ratio <= RATIO_MAX and clean,
        }
    return {
        "scenario": "growth",
        "settings": {"connections": args.connections, "warmup": args.warmup}
        | {"duration": args.duration, "callers": args.callers, "sizes": args.sizes},
        "seeded": seeded,
        "cases": results,
        "targets": targets,
        "targets_met": all(t["met"] for t in targets.values()),
        "source": processes.source_state(),
    }


def print_report(report: dict) -> None:
    s = report["settings"]
    print(
        f"\ngrowth: {s['connections']} connections, {s['warmup']} s warm-up + {s['duration']} s"
        f" per case, {s['callers']} callers per pool"
    )
    head = ["case", "req/s", "p50 ms", "p95 ms", "p99 ms", "non2xx", "fallbk", "sql/req", "hit"]
    print(f"{head[0]:<14}" + "".join(f" {h:>8}" for h in head[1:]))
    for key, r in report["cases"].items():
        app = r["app"]
        cells = [f"{r['rps']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}"]
        cells += [f"{r['p99_ms']:.2f}", r["non_2xx"], r["fallbacks"]]
        cells += [initiation._figure(app["sql_per_request"])]
        cells += [initiation._figure(app["ctx_hit_rate"], ".1%")]
        print(f"{key:<14}" + "".join(f" {c:>8}" for c in cells))
    preamble.print_verdict(report)
