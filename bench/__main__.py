"""`python -m bench <scenario> [options]`: run one benchmark scenario and print its report.

Scenario modules are imported only after the throwaway environment is set up (Django configured,
database migrated), so they may import the project at module level. Each exposes
`run(args) -> int` (the exit status).
"""

import argparse
import importlib
import os
import sys

from bench import environment


def add_timing_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--iterations", type=int, default=20_000, help="timed calls per case")
    sub.add_argument("--warmup", type=int, default=1_000, help="untimed calls per case first")
    sub.add_argument(
        "--block", type=int, default=100, help="calls per case per round (cases take turns)"
    )


def add_closed_load_arguments(
    sub: argparse.ArgumentParser, connections: int, warmup: float, duration: float, per: str
) -> None:
    """The load client's closed-loop options (bench.loadgen's initiation plan)."""
    sub.add_argument(
        "--connections", type=int, default=connections, help="concurrent keep-alive clients"
    )
    sub.add_argument(
        "--warmup", type=float, default=warmup, help=f"unmeasured seconds per {per} first"
    )
    sub.add_argument("--duration", type=float, default=duration, help=f"measured seconds per {per}")


def add_leads_argument(sub: argparse.ArgumentParser, default: int) -> None:
    sub.add_argument("--leads", type=int, default=default, help="leads in the big organization")


def add_load_arguments(sub: argparse.ArgumentParser) -> None:
    add_closed_load_arguments(sub, 16, 2.0, 10.0, "case")
    add_leads_argument(sub, 100_000)
    sub.add_argument(
        "--callers", type=int, default=9_000, help="callers warmed for the warm cases (in all)"
    )
    sub.add_argument("--delay-ms", type=float, default=2.0, help="proxy delay, each direction")
    sub.add_argument("--cases", default="", help="only these cases (comma-separated keys)")


def add_monitoring_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--iterations", type=int, default=50_000, help="timed calls per case")
    sub.add_argument("--call-warmup", type=int, default=2_000, help="untimed calls per case")
    sub.add_argument("--block", type=int, default=500, help="calls per case per round")
    add_closed_load_arguments(sub, 16, 2.0, 6.0, "load run")
    sub.add_argument("--rounds", type=int, default=4, help="on/off pairs per request kind")
    add_leads_argument(sub, 2_000)
    sub.add_argument("--outages", type=int, default=3, help="Redis stops (SIGTERM), then 1 hang")


def add_mixed_arguments(sub: argparse.ArgumentParser, write_share: float) -> None:
    """Options of the mixed-load scenarios (hitrate, toggle, outage)."""
    add_leads_argument(sub, 100_000)
    sub.add_argument("--small-leads", type=int, default=5_000, help="leads in each small one")
    sub.add_argument("--connections", type=int, default=16, help="keep-alive client connections")
    sub.add_argument("--write-share", type=float, default=write_share, help="texts + post-calls")
    sub.add_argument("--quick", action="store_true", help="a tiny smoke run of a few seconds")
    sub.add_argument(
        "--redis-socket-timeout",
        type=float,
        help="the app's REDIS_SOCKET_TIMEOUT (default: its own)",
    )


def add_hitrate_arguments(sub: argparse.ArgumentParser) -> None:
    add_mixed_arguments(sub, 0.05)
    sub.add_argument("--duration", type=float, default=150.0, help="seconds with caching on")
    sub.add_argument("--off-duration", type=float, default=30.0, help="seconds switched off")
    sub.add_argument("--zipf", type=float, default=1.1, help="exponent of the callers' ranks")
    sub.add_argument("--interval", type=float, default=10.0, help="seconds per curve point")


def add_steady_load_arguments(sub: argparse.ArgumentParser) -> None:
    add_mixed_arguments(sub, 0.15)
    sub.add_argument("--callers", type=int, default=200, help="hot callers (uniform)")
    sub.add_argument("--rate", type=float, default=16.0, help="new requests per second")
    sub.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the first")


def add_toggle_arguments(sub: argparse.ArgumentParser) -> None:
    add_steady_load_arguments(sub)
    sub.add_argument("--flips", type=int, default=20, help="switch flips (off, on, ...)")
    sub.add_argument("--every", type=float, default=3.0, help="seconds between flips")


def add_outage_arguments(sub: argparse.ArgumentParser) -> None:
    add_steady_load_arguments(sub)
    sub.add_argument("--phase", type=float, default=10.0, help="seconds per phase")
    sub.add_argument("--cycles", type=int, default=2, help="off/on/stop/restart/hang/resume cycles")


def add_failover_arguments(sub: argparse.ArgumentParser) -> None:
    add_steady_load_arguments(sub)
    sub.add_argument("--phase", type=float, default=15.0, help="seconds per phase")
    sub.add_argument("--failovers", type=int, default=2, help="failovers, one after the other")
    sub.add_argument(
        "--crash", action="store_true", help="kill the primary instead of SENTINEL FAILOVER"
    )


def add_growth_arguments(sub: argparse.ArgumentParser) -> None:
    add_closed_load_arguments(sub, 4, 1.0, 5.0, "case")
    sub.add_argument("--callers", type=int, default=1_500, help="callers per pool (warm, cold)")
    sub.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="lead counts, rising"
    )


def add_scale_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4], help="daphne counts")
    add_closed_load_arguments(sub, 16, 2.0, 8.0, "case")
    add_leads_argument(sub, 10_000)
    sub.add_argument("--callers", type=int, default=5_000, help="callers warmed (in all)")
    sub.add_argument("--flips", type=int, default=4, help="switch flips timed (off, on, ...)")
    sub.add_argument(
        "--serve",
        action="store_true",
        help="each count as `manage.py serve --processes N` (one shared socket, no balancer)",
    )
    sub.add_argument(
        "--channel-redis-url",
        default="redis://127.0.0.1:6379/9",
        help="the children's CHANNEL_REDIS_URL (never flushed)",
    )


# name -> (module, one-line description, its options). Add a scenario here.
SCENARIOS = {
    "gate": (
        "bench.gate",
        "per-call cost of the cache gate: hit, miss, breaker open, call context",
        add_timing_arguments,
    ),
    "initiation": (
        "bench.initiation",
        "the initiation webhook under load (daphne, 100k leads): floor, warm, switch off, +2 ms",
        add_load_arguments,
    ),
    "monitoring": (
        "bench.monitoring",
        "request recording cost, webhook req/s with metrics on vs off, Redis alert timing",
        add_monitoring_arguments,
    ),
    "hitrate": (
        "bench.hitrate",
        "hit-rate curve from cold under Zipf repeat callers + 5 %% writes; SQL on vs off",
        add_hitrate_arguments,
    ),
    "toggle": (
        "bench.toggle",
        "switch flipped off/on under load with writes between: errors and stale reads",
        add_toggle_arguments,
    ),
    "outage": (
        "bench.outage",
        "Redis stopped and hung under load: errors, lost writes, latency, stale reads, alerts",
        add_outage_arguments,
    ),
    "failover": (
        "bench.failover",
        "Redis under Sentinel failed over twice under load: errors, lost writes, stale reads",
        add_failover_arguments,
    ),
    "growth": (
        "bench.growth",
        "initiation p50/p95 warm and cold at 10,000 vs 1,000,000 leads (flat within 1.3x)",
        add_growth_arguments,
    ),
    "scale": (
        "bench.scale",
        "1/2/4 daphne behind a balancer: warm req/s, switch propagation, merged metrics",
        add_scale_arguments,
    ),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    scenarios = top.add_subparsers(dest="scenario", required=True, metavar="scenario")
    for name, (_, description, add_arguments) in SCENARIOS.items():
        sub = scenarios.add_parser(name, help=description, description=description)
        add_arguments(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    module_name, _, _ = SCENARIOS[args.scenario]
    database = f"{environment.BENCH_DATABASE}_{args.scenario}_{os.getpid()}"
    with environment.prepared(database=database):
        return importlib.import_module(module_name).run(args)


if __name__ == "__main__":
    sys.exit(main())
