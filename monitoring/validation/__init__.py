"""The production-readiness suite behind `manage.py redis_validate`.

The registry and runner are in `registry`; monitoring's own checks (infrastructure, resilience,
alerting) in `checks`. A domain app adds the checks of what it caches in its own `validation`
module (`leads/validation.py`), found by `registry.discover()`.
"""

from monitoring.validation import checks  # noqa: F401  (registers monitoring's checks)
from monitoring.validation.registry import (
    FAIL,
    PASS,
    SKIP,
    WARN,
    Options,
    Outcome,
    Report,
    Result,
    ValidationContext,
    discover,
    failed,
    passed,
    register,
    registry,
    run_checks,
    skipped,
    warned,
)

__all__ = [
    "FAIL",
    "PASS",
    "SKIP",
    "WARN",
    "Options",
    "Outcome",
    "Report",
    "Result",
    "ValidationContext",
    "discover",
    "failed",
    "passed",
    "register",
    "registry",
    "run_checks",
    "skipped",
    "warned",
]
