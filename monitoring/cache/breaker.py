"""A circuit breaker for the cache Redis: closed -> open after repeated failures -> (cool-down)
-> half-open, where exactly one caller probes -> closed again, or open for another cool-down.

While open, `allow()` is one attribute read and one clock read: a broken Redis costs nothing.

Failures are counted per episode: calls that were already under way when a counted failure
ended (every request caught in the same stall of a busy server) add nothing to it, so one slow
moment cannot open the breaker by itself, while calls that keep failing one after the other
(a server down or hung) open it after REDIS_BREAKER_FAILURES of them.
"""

import threading
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.failure_threshold = max(1, failure_threshold)
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self.state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._last_failure_at = float("-inf")

    def now(self) -> float:
        return self._clock()

    @property
    def failing(self) -> bool:
        """The latest call failed (closed or not): a caller may skip optional Redis work."""
        return self._failures > 0 or self.state != CLOSED

    def allow(self) -> bool:
        """True while closed. Never lets a caller through while open or while a probe runs."""
        return self.state == CLOSED

    def probe_due(self) -> bool:
        """Open and past the cool-down (a cheap look; `try_start_probe` decides who probes)."""
        return self.state == OPEN and self._clock() >= self._opened_at + self.cooldown

    def try_start_probe(self) -> bool:
        """After the cool-down, hand the half-open probe to exactly one caller."""
        if self.state != OPEN or self._clock() < self._opened_at + self.cooldown:
            return False
        with self._lock:
            if self.state != OPEN or self._clock() < self._opened_at + self.cooldown:
                return False
            self._set(HALF_OPEN)
            return True

    def record_success(self) -> None:
        if self._failures:
            self._failures = 0

    def record_failure(self, *, hard: bool = False, started_at: float | None = None) -> None:
        """Count a failure of a call started at `started_at` (the breaker's clock); one that
        started before the last counted failure ended belongs to that episode and is not
        counted again. A hard failure opens the breaker at once."""
        with self._lock:
            overlapping = started_at is not None and started_at < self._last_failure_at
            if not overlapping or hard:
                self._failures += 1
                self._last_failure_at = self._clock()
            if self.state == CLOSED and (hard or self._failures >= self.failure_threshold):
                self._trip()

    def probe_failed(self) -> None:
        with self._lock:
            self._trip()

    def close(self) -> None:
        with self._lock:
            self._failures = 0
            self._set(CLOSED)

    def reset(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = 0.0
            self._last_failure_at = float("-inf")
            self.state = CLOSED

    def seconds_until_probe(self) -> float:
        if self.state != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def _trip(self) -> None:
        self._opened_at = self._clock()
        self._set(OPEN)

    def _set(self, state: str) -> None:
        old, self.state = self.state, state
        if old != state and self._on_change is not None:
            self._on_change(old, state)
