"""Shared by the metrics, health and monitoring-API tests: the API token, a clean
in-process window, SSE parsing, and the environment a child process needs to reach the test
database."""

import json
import os
from pathlib import Path

from django.conf import settings

from monitoring import counters
from monitoring.cache import gate
from monitoring.metrics.recorder import recorder

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "monitoring-test-token-7f3a"


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def reset_metrics() -> None:
    """Forget what earlier tests recorded in this process (requests, cache and event counts)."""
    recorder.take()
    counters.reset()
    gate.stats.reset()


def parse_sse(chunk: str) -> tuple[str, dict]:
    """("event name", data) of one `event: ...\\ndata: ...\\n\\n` block."""
    fields = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
    return fields["event"], json.loads(fields["data"])


def subprocess_environment(**extra: str) -> dict[str, str]:
    """The environment of a child process that must use this test run's database."""
    db = settings.DATABASES["default"]
    if settings.DATABASE_IS_POSTGRES:
        host = db.get("HOST") or "127.0.0.1"
        user = db.get("USER") or ""
        url = f"postgres://{user}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    environment = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    if db.get("PASSWORD"):
        environment["PGPASSWORD"] = db["PASSWORD"]
    return {**environment, **extra}
