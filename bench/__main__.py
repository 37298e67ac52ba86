"""`python -m bench <scenario> [options]`: run one benchmark scenario and print its report.

Scenario modules are imported only after the throwaway environment is set up (Django configured,
database migrated), so they may import the project at module level. Each exposes
`run(args) -> int` (the exit status).
"""

import argparse
import importlib
import sys

from bench import environment


def add_timing_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--iterations", type=int, default=20_000, help="timed calls per case")
    sub.add_argument("--warmup", type=int, default=1_000, help="untimed calls per case first")
    sub.add_argument(
        "--block", type=int, default=100, help="calls per case per round (cases take turns)"
    )


def add_load_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--connections", type=int, default=16, help="concurrent keep-alive clients")
    sub.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per case first")
    sub.add_argument("--duration", type=float, default=10.0, help="measured seconds per case")
    sub.add_argument("--leads", type=int, default=100_000, help="leads in the big organization")
    sub.add_argument(
        "--callers", type=int, default=9_000, help="callers warmed for the warm cases (in all)"
    )
    sub.add_argument("--delay-ms", type=float, default=2.0, help="proxy delay, each direction")


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
    with environment.prepared():
        return importlib.import_module(module_name).run(args)


if __name__ == "__main__":
    sys.exit(main())
