"""`python -m bench <scenario> [options]`: run one benchmark scenario and print its report.

Scenario modules are imported only after the throwaway environment is set up (Django configured,
database migrated), so they may import the project at module level. Each exposes
`run(args) -> int` (the exit status).
"""

import argparse
import importlib
import sys

from bench import environment

# name -> (module, one-line description). Add a scenario here.
SCENARIOS = {
    "gate": (
        "bench.gate",
        "per-call cost of the cache gate: hit, miss, breaker open, call context",
    ),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    scenarios = top.add_subparsers(dest="scenario", required=True, metavar="scenario")
    for name, (_, description) in SCENARIOS.items():
        sub = scenarios.add_parser(name, help=description, description=description)
        add_timing_arguments(sub)
    return top


def add_timing_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--iterations", type=int, default=20_000, help="timed calls per case")
    sub.add_argument("--warmup", type=int, default=1_000, help="untimed calls per case first")
    sub.add_argument(
        "--block", type=int, default=100, help="calls per case per round (cases take turns)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    module_name, _ = SCENARIOS[args.scenario]
    with environment.prepared():
        return importlib.import_module(module_name).run(args)


if __name__ == "__main__":
    sys.exit(main())
