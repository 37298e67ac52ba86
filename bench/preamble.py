"""What every scenario does first and last: refuse to run where it cannot (all but `gate` need
PostgreSQL), shrink itself with --quick, note how busy the shared machine was at the start and
at the end, and print its report, exiting 0 only when its targets are met."""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from bench import processes


@dataclass(frozen=True)
class Machine:
    """The machine as the scenario found it (it is shared: how busy it was)."""

    cpus: int
    load_start: float
    source: dict

    def load_average(self) -> dict:
        """The 1-minute load average at the start and now (the load scenarios' report)."""
        return {"start": self.load_start, "end": os.getloadavg()[0]}

    def summary(self) -> dict:
        """CPUs, commit and load average at the start and now (the mixed-load scenarios')."""
        return {
            "cpus": self.cpus,
            "load_average_1min": round(self.load_start, 2),
            "source": self.source,
            "load_average_1min_end": round(os.getloadavg()[0], 2),
        }


def start(name: str, args, *, postgres: bool = True, quick: dict | None = None) -> Machine | None:
    """None (after saying why) when the scenario cannot run here; else the machine now. With
    --quick, `quick` replaces the options it names."""
    if postgres and not settings.DATABASE_IS_POSTGRES:
        print(f"{name} needs PostgreSQL: set DATABASE_URL=postgres://...")
        return None
    if quick is not None and args.quick:
        vars(args).update(quick)
    return Machine(os.cpu_count(), os.getloadavg()[0], processes.source_state())


def finish(report: dict, print_report: Callable[[dict], None]) -> int:
    print_report(report)
    return 0 if report["targets_met"] else 1


def print_verdict(report: dict, *notes: str) -> None:
    """The end of every report: each target met or MISSED, lines about figures with no target,
    and the whole report as one JSON line."""
    for name, target in report["targets"].items():
        print(f"{name}: {json.dumps(target)} -> {'met' if target['met'] else 'MISSED'}")
    for note in notes:
        print(note)
    print(json.dumps(report, separators=(",", ":")))
