"""The in-process window: what this process served since the last flush. Recording a request
is a few dictionary updates under a lock (microseconds, no I/O)."""

import bisect
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass

# Upper bounds (milliseconds) of the latency histogram's buckets; the last is unbounded.
LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 150, 200, 300, 500, 1000, 2000, 5000]


@dataclass
class RequestStats:
    """The figures of the request being served (SQL counted from any thread it uses)."""

    sql: int = 0


current_request: ContextVar[RequestStats | None] = ContextVar("opsdash_request", default=None)


def empty_group() -> dict:
    return {
        "count": 0,
        "errors": 0,
        "status": {},
        "latency_sum_ms": 0.0,
        "latency_max_ms": 0.0,
        "buckets": [0] * (len(LATENCY_BUCKETS_MS) + 1),
        "sql": 0,
    }


class Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, dict] = {}
        self._started = time.time()

    def record(self, group: str, status: int, seconds: float, sql: int) -> None:
        ms = seconds * 1000.0
        bucket = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)
        status_class = f"{status // 100}xx"
        with self._lock:
            row = self._groups.get(group)
            if row is None:
                row = self._groups[group] = empty_group()
            row["count"] += 1
            row["errors"] += status >= 500
            row["status"][status_class] = row["status"].get(status_class, 0) + 1
            row["latency_sum_ms"] += ms
            if ms > row["latency_max_ms"]:
                row["latency_max_ms"] = ms
            row["buckets"][bucket] += 1
            row["sql"] += sql

    def take(self) -> tuple[float, float, dict[str, dict]]:
        """(start, end, requests by group) since the last take; starts a new window."""
        now = time.time()
        with self._lock:
            groups, self._groups = self._groups, {}
            started, self._started = self._started, now
        return started, now, groups


recorder = Recorder()
