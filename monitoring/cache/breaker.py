"""A circuit breaker for the cache Redis: closed -> open after repeated failures -> (cool-down)
-> half-open, where exactly one caller probes -> closed again, or open for another cool-down.

While open, `allow()` is one attribute read and one clock read: a broken Redis costs nothing.
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

    def record_failure(self, *, hard: bool = False) -> None:
        """Count a failure; a hard one (a timeout: the server hangs) opens the breaker at once."""
        with self._lock:
            self._failures += 1
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
