"""The registry and runner of the readiness checks.

A check is a function of the run's `ValidationContext` returning an `Outcome` (pass, warn,
fail or skip, with a detail line). Checks register under a name and a category; the runner
runs them category by category, skips a check whose prerequisites did not pass, times each,
and scores the whole. Apps contribute checks from their own `validation` module, found by
`discover()` the way the admin finds `admin` modules: monitoring never imports them by name.
"""

import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError
from django.utils.module_loading import autodiscover_modules
from redis.exceptions import RedisError

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
CATEGORIES = ("infrastructure", "function", "performance", "resilience", "monitoring")


@dataclass(frozen=True)
class Outcome:
    status: str
    detail: str


def passed(detail: str) -> Outcome:
    return Outcome(PASS, detail)


def warned(detail: str) -> Outcome:
    return Outcome(WARN, detail)


def failed(detail: str) -> Outcome:
    return Outcome(FAIL, detail)


def skipped(detail: str) -> Outcome:
    return Outcome(SKIP, detail)


@dataclass(frozen=True)
class Options:
    """What the operator chose for this run."""

    allow_switch_flip: bool = False
    samples: int = 50
    max_latency_ms: float = 10.0
    min_speedup: float = 3.0


@dataclass
class ValidationContext:
    """Shared by the checks of one run: the options, the results so far, a place for state
    one check leaves to the next (`shared`), and clean-ups run when the run ends (`cleanup`)."""

    options: Options = field(default_factory=Options)
    results: dict[str, "Result"] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    cleanup: ExitStack = field(default_factory=ExitStack)


@dataclass(frozen=True)
class Check:
    name: str
    category: str
    run: Callable[[ValidationContext], Outcome]
    weight: int = 1
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    name: str
    category: str
    status: str
    detail: str
    duration_ms: float
    weight: int

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Registry:
    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def register(self, name: str, category: str, *, weight: int = 1, requires: Iterable = ()):
        """Decorator: register `run` as the check `name` (registering a name again replaces
        the check, so a module imported twice does not run its checks twice)."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")

        def add(run: Callable[[ValidationContext], Outcome]):
            self._checks[name] = Check(name, category, run, weight, tuple(requires))
            return run

        return add

    def checks(self) -> list[Check]:
        """In category order, then in the order they were registered."""
        registered = list(self._checks.values())
        return sorted(registered, key=lambda check: CATEGORIES.index(check.category))

    def names(self) -> list[str]:
        return [check.name for check in self.checks()]


registry = Registry()
register = registry.register


def discover() -> None:
    """Import every installed app's `validation` module, so that its checks register."""
    autodiscover_modules("validation")


@dataclass(frozen=True)
class Report:
    results: list[Result]

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.status == FAIL]

    @property
    def warnings(self) -> list[str]:
        return [r.name for r in self.results if r.status == WARN]

    @property
    def ready(self) -> bool:
        return not self.failed

    @property
    def score(self) -> float:
        """Weight earned over weight judged: a pass earns its weight, a warning half of it,
        a failure nothing; skipped checks are not judged."""
        judged = [r for r in self.results if r.status != SKIP]
        total = sum(r.weight for r in judged)
        earned = sum(r.weight * {PASS: 1.0, WARN: 0.5}.get(r.status, 0.0) for r in judged)
        return round(earned / total, 3) if total else 0.0

    @property
    def verdict(self) -> str:
        if self.failed:
            return f"NOT READY: {', '.join(self.failed)}"
        if self.warnings:
            return "READY WITH WARNINGS"
        return "READY"

    def as_dict(self) -> dict:
        counts = dict.fromkeys((PASS, WARN, FAIL, SKIP), 0)
        for result in self.results:
            counts[result.status] += 1
        return {
            "verdict": self.verdict,
            "ready": self.ready,
            "score": self.score,
            "counts": counts,
            "failed": self.failed,
            "warnings": self.warnings,
            "checks": [result.as_dict() for result in self.results],
        }


def run_checks(
    context: ValidationContext,
    checks: Iterable[Check],
    skip: Iterable[str] = (),
    on_result: Callable[[Result], None] = lambda result: None,
) -> Report:
    """Run `checks` in order; `on_result` sees each result as soon as it is known (progress).
    The context's clean-ups run at the end, whatever happened (Ctrl-C included)."""
    skip = set(skip)
    results = []
    with context.cleanup:
        for check in checks:
            result = _run_one(context, check, skip)
            context.results[check.name] = result
            results.append(result)
            on_result(result)
    return Report(results)


def _run_one(context: ValidationContext, check: Check, skip: set[str]) -> Result:
    started = time.perf_counter()
    if check.name in skip:
        outcome = skipped("skipped by --skip")
    else:
        outcome = _unmet_prerequisite(context, check) or _outcome(context, check)
    elapsed = round((time.perf_counter() - started) * 1000, 2)
    return Result(check.name, check.category, outcome.status, outcome.detail, elapsed, check.weight)


def _unmet_prerequisite(context: ValidationContext, check: Check) -> Outcome | None:
    for name in check.requires:
        required = context.results.get(name)
        if required is None or required.status != PASS:
            status = required.status if required else "not run"
            return skipped(f"needs {name}, which did not pass ({status})")
    return None


def _outcome(context: ValidationContext, check: Check) -> Outcome:
    try:
        return check.run(context)
    except (DatabaseError, RedisError, OSError) as exc:
        # A fault of a service under test fails that check, and the run goes on to the others.
        return failed(f"{type(exc).__name__}: {exc}")
