"""Per-call timing of several cases, interleaved so that a noisy, shared machine slows them alike.

Every case is warmed up, then the cases take turns in rounds of `block` calls each, in a shuffled
order per round, until each has made `iterations` timed calls. Each call is timed on its own
(perf_counter_ns), so a sample includes one clock read (~0.1 µs) for every case alike.
"""

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Case:
    key: str
    label: str
    # Called with the call's index (unique across warm-up and timed calls).
    call: Callable[[int], object]
    samples: list[int] = field(default_factory=list, repr=False)
    calls: int = 0

    def run(self, n: int, record: bool = True) -> None:
        clock, call, samples = time.perf_counter_ns, self.call, self.samples
        for i in range(self.calls, self.calls + n):
            started = clock()
            call(i)
            elapsed = clock() - started
            if record:
                samples.append(elapsed)
        self.calls += n

    def summary(self) -> dict:
        us = sorted(s / 1000 for s in self.samples)
        return {
            "label": self.label,
            "n": len(us),
            "mean_us": round(statistics.fmean(us), 2),
            "median_us": round(statistics.median(us), 2),
            "p95_us": round(us[int(len(us) * 0.95)], 2),
        }


def interleave(cases: list[Case], iterations: int, warmup: int, block: int, seed: int = 0) -> None:
    for case in cases:
        case.run(warmup, record=False)
    rng = random.Random(seed)
    done = 0
    while done < iterations:
        n = min(block, iterations - done)
        for case in rng.sample(cases, len(cases)):
            case.run(n)
        done += n


def table(rows: list[dict]) -> str:
    lines = [f"{'case':<58} {'mean µs':>10} {'median µs':>10} {'p95 µs':>10}"]
    for row in rows:
        lines.append(
            f"{row['label']:<58} {row['mean_us']:>10.2f} {row['median_us']:>10.2f}"
            f" {row['p95_us']:>10.2f}"
        )
    return "\n".join(lines)
