"""`python -m bench toggle`: the REDIS_ENABLED switch flipped off and on, again and again, under
steady load with writes in between.

In one run: seed the population (100,000 leads), serve the app under daphne with caching on,
and drive it from a separate process, open loop (16 new requests/s by default), for a hot set of
200 callers drawn uniformly: call initiations and 15 % writes (texts via Twilio's SMS webhook and
post-call transcriptions, validly signed) that change what the caller's call context returns;
each acknowledged write is followed by initiations for its caller 0, 0.3, 1 and 2 s later.
After a warm-up, `manage.py redis_switch off --reason bench` then `... on ...`, alternately,
every 3 s (20 flips by default; always ending on), each a separate process against the bench
database, as an operator would run it.

Stale read, precisely: an initiation answer for caller X whose request was sent after a write
for X was acknowledged (2xx) and that does not reflect it: its `conversation_context` lacks the
text's unique marker (or a later one), or its `customer_name` is not the name the post-call set
(or a later one). Writes for one caller never overlap, and every answer is checked
(bench.loadgen). Targets: no non-2xx answer (connection errors included) and no stale read.
"""

import json
import time

from bench import preamble, seed, workload
from monitoring.models import SwitchAudit

SETTLE = 1.0  # seconds after a flip counted apart (the app re-reads the switch every 0.5 s)
QUICK = {"leads": 2_000, "small_leads": 100, "flips": 2, "every": 2.0, "warmup": 2.0}


def run(args) -> int:
    machine = preamble.start("toggle", args, quick=QUICK)
    if machine is None:
        return 2
    people, phones = seed.ranked_population(args.leads, args.small_leads)
    result = drive(people, phones[: args.callers], args)
    report = build_report(args, people, result)
    report["machine"] = machine.summary()
    return preamble.finish(report, print_report)


def drive(people, callers: list[str], args) -> dict:
    with workload.served(args) as app:
        load = workload.LoadRun(app, plan(people, callers, args)).start()
        workload.sleep_until(load.started + args.warmup)
        flips = flip_repeatedly(app, args.flips, args.every)
        time.sleep(args.warmup)  # a tail with caching on
        summary, records = load.stop()
        recorded = workload.wait_for_deferred(load.plan["tag"])
    return {
        "app_log": workload.log_summary(app.log_text, load.started),
        "t0": load.started,
        "summary": summary,
        "records": records,
        "flips": flips,
        "changes": switch_changes(load.started),
        "recorded": recorded,
    }


def plan(people, callers: list[str], args) -> dict:
    return {
        "connections": args.connections,
        "rate": args.rate,
        "max_seconds": args.warmup * 2 + args.flips * args.every + 120,
        "org_number": people.org_number,
        "callers": callers,
        "zipf": 0.0,
        "seed": 30,
        "write_share": args.write_share,
        "verify_after": [0.0, 0.3, 1.0, 2.0],
    }


def flip_repeatedly(app: workload.App, flips: int, every: float) -> list[dict]:
    """off, on, off, ... every `every` seconds; one more "on" if it would end off."""
    start, done = time.time(), []
    for n in range(flips + flips % 2):
        workload.sleep_until(start + n * every)
        done.append(workload.switch_cli(app, "off" if n % 2 == 0 else "on"))
    return done


def switch_changes(since: float) -> list[tuple[float, bool]]:
    """When the switch's row changed (the audit's commit times) and to what."""
    rows = SwitchAudit.objects.filter(at__gte=workload.utc(since - 1)).order_by("at")
    return [(row.at.timestamp(), row.new_enabled) for row in rows]


# --- figures --------------------------------------------------------------------------------


def by_state(records: list[list], changes: list[tuple[float, bool]]) -> dict[str, list]:
    """Each request by the switch's stored state when it was sent; the first SETTLE seconds
    after each flip apart."""
    groups: dict[str, list] = {"caching on": [], "caching off": [], "< 1 s after a flip": []}
    for record in records:
        state, since = True, None
        for at, enabled in changes:
            if at > record[0]:
                break
            state, since = enabled, at
        if since is not None and record[0] - since < SETTLE:
            groups["< 1 s after a flip"].append(record)
        else:
            groups["caching on" if state else "caching off"].append(record)
    return groups


def build_report(args, people, result: dict) -> dict:
    records, summary = result["records"], result["summary"]
    rows = {
        name: workload.phase_stats(rs) for name, rs in by_state(records, result["changes"]).items()
    }
    rows["all"] = workload.phase_stats(records)
    errors = rows["all"]["non_2xx"]
    stale = summary["stale_text"] + summary["stale_name"]
    initiations_ok = sum(1 for r in records if r[2] == 0 and 200 <= r[3] < 300)
    return {
        "scenario": "toggle",
        "settings": {k: v for k, v in vars(args).items() if k != "scenario"},
        "population": {"rows": people.rows, "seed_seconds": people.seconds},
        "rows": rows,
        "flips": len(result["changes"]),
        "flip_cli_seconds": [f["seconds"] for f in result["flips"]],
        "stale": {"text": summary["stale_text"], "name": summary["stale_name"]},
        "stale_examples": summary["stale_examples"],
        "writes_refused": summary["refused"],
        "lost_writes": workload.lost_writes(summary),
        "app_log": result["app_log"],
        "switch_audit": workload.switch_audit(result["t0"]),
        "initiations_recorded": {"recorded": result["recorded"], "answered": initiations_ok},
        "targets": {
            "zero_errors": {"value": errors, "met": errors == 0},
            "zero_stale_reads": {"value": stale, "met": stale == 0},
        },
        "targets_met": errors == 0 and stale == 0,
    }


def print_report(report: dict) -> None:
    s = report["settings"]
    print(
        f"\ntoggle: {s['callers']} hot callers of {s['leads']} leads, {s['rate']} new requests/s"
        f" ({s['write_share']:.0%} writes, each followed by 4 checking initiations),"
        f" {report['flips']} flips every {s['every']} s;"
        f" {workload.socket_timeout(s['redis_socket_timeout'])}"
    )
    print(workload.phase_table(report["rows"]))
    print(f"switch CLI seconds per flip: {report['flip_cli_seconds']}")
    keys = ("stale", "writes_refused", "lost_writes", "initiations_recorded", "switch_audit")
    for key in keys:
        print(f"{key}: {json.dumps(report[key])}")
    workload.print_log(report["app_log"])
    for example in report["stale_examples"][:5]:
        print(f"  stale: {json.dumps(example)}")
    preamble.print_verdict(report)
