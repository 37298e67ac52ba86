"""The circuit breaker on its own, with a clock the test moves by hand: closed -> open after
repeated failures (or one hard failure) -> cool-down -> half-open with exactly one probe ->
closed, or open again for a fresh cool-down."""

import threading
import time

import pytest

from monitoring.cache.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker

THRESHOLD = 3
COOLDOWN = 10.0


class FakeClock:
    """A monotonic clock that only moves when the test says so. With `yield_for`, every reading
    sleeps that long first, handing the GIL to other threads: racing callers then interleave
    between reading the clock and acting on it, where a missing lock would show."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.yield_for = 0.0

    def __call__(self) -> float:
        if self.yield_for:
            time.sleep(self.yield_for)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def breaker(clock, changes) -> CircuitBreaker:
    return CircuitBreaker(
        THRESHOLD, COOLDOWN, clock=clock, on_change=lambda old, new: changes.append((old, new))
    )


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(THRESHOLD):
        breaker.record_failure()
    assert breaker.state == OPEN


def test_it_starts_closed(breaker, changes):
    assert breaker.state == CLOSED
    assert breaker.allow() is True
    assert breaker.try_start_probe() is False
    assert breaker.seconds_until_probe() == 0.0
    assert changes == []


def test_it_stays_closed_below_the_threshold_and_opens_on_it(breaker, changes):
    for _ in range(THRESHOLD - 1):
        breaker.record_failure()
    assert breaker.state == CLOSED
    assert breaker.allow() is True
    assert changes == []

    breaker.record_failure()

    assert breaker.state == OPEN
    assert breaker.allow() is False
    assert changes == [(CLOSED, OPEN)]


def test_it_treats_a_threshold_below_one_as_one(clock):
    breaker = CircuitBreaker(0, COOLDOWN, clock=clock)
    assert breaker.failure_threshold == 1

    breaker.record_failure()

    assert breaker.state == OPEN


def test_it_resets_the_failure_count_on_a_success(breaker, changes):
    for _ in range(THRESHOLD - 1):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(THRESHOLD - 1):
        breaker.record_failure()

    assert breaker.state == CLOSED
    assert changes == []

    breaker.record_failure()

    assert breaker.state == OPEN
    assert changes == [(CLOSED, OPEN)]


def test_it_opens_at_once_on_a_hard_failure(breaker, changes):
    breaker.record_failure(hard=True)

    assert breaker.state == OPEN
    assert breaker.allow() is False
    assert breaker.seconds_until_probe() == COOLDOWN
    assert changes == [(CLOSED, OPEN)]


def test_it_lets_nobody_through_while_open_before_the_cooldown(breaker, clock):
    trip(breaker)

    clock.advance(COOLDOWN - 0.5)

    assert breaker.allow() is False
    assert breaker.try_start_probe() is False
    assert breaker.state == OPEN
    assert breaker.seconds_until_probe() == 0.5


def test_it_counts_down_to_the_probe(breaker, clock):
    trip(breaker)
    assert breaker.seconds_until_probe() == COOLDOWN

    clock.advance(4.0)
    assert breaker.seconds_until_probe() == COOLDOWN - 4.0

    clock.advance(COOLDOWN)  # well past the cool-down: never negative
    assert breaker.seconds_until_probe() == 0.0


def test_it_hands_the_probe_to_exactly_one_caller_after_the_cooldown(breaker, clock, changes):
    trip(breaker)
    clock.advance(COOLDOWN)

    assert breaker.try_start_probe() is True
    assert breaker.state == HALF_OPEN
    assert breaker.try_start_probe() is False
    assert breaker.allow() is False  # nobody else gets through while the probe runs
    assert breaker.seconds_until_probe() == 0.0
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_it_reopens_with_a_fresh_cooldown_when_the_probe_fails(breaker, clock, changes):
    trip(breaker)
    clock.advance(COOLDOWN + 3.0)
    assert breaker.try_start_probe() is True

    clock.advance(1.0)
    breaker.probe_failed()

    assert breaker.state == OPEN
    assert breaker.allow() is False
    assert breaker.seconds_until_probe() == COOLDOWN
    clock.advance(COOLDOWN - 0.5)
    assert breaker.try_start_probe() is False
    clock.advance(0.5)
    assert breaker.try_start_probe() is True
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]


def test_it_closes_after_a_successful_probe(breaker, clock, changes):
    trip(breaker)
    clock.advance(COOLDOWN)
    assert breaker.try_start_probe() is True

    breaker.close()

    assert breaker.state == CLOSED
    assert breaker.allow() is True
    assert breaker.seconds_until_probe() == 0.0
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_it_starts_counting_failures_afresh_after_closing(breaker, clock):
    trip(breaker)
    breaker.record_failure()  # failures while open are still counted...
    clock.advance(COOLDOWN)
    assert breaker.try_start_probe() is True
    breaker.close()  # ...and forgotten on closing

    for _ in range(THRESHOLD - 1):
        breaker.record_failure()
    assert breaker.state == CLOSED
    breaker.record_failure()
    assert breaker.state == OPEN


def test_it_reports_no_change_for_non_transitions(breaker, clock, changes):
    breaker.close()  # closed -> closed
    breaker.record_success()
    trip(breaker)
    breaker.record_failure()  # open stays open
    breaker.record_failure(hard=True)
    clock.advance(1.0)
    breaker.probe_failed()  # open -> open (restarts the cool-down, but is no transition)

    assert changes == [(CLOSED, OPEN)]
    assert breaker.seconds_until_probe() == COOLDOWN


def test_it_hands_the_probe_to_one_of_many_racing_threads(breaker, clock, changes):
    trip(breaker)
    clock.advance(COOLDOWN)
    clock.yield_for = 0.001
    threads_count = 16
    barrier = threading.Barrier(threads_count)
    results: list[bool] = []
    results_lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        got_it = breaker.try_start_probe()
        with results_lock:
            results.append(got_it)

    threads = [threading.Thread(target=race) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(results) == threads_count
    assert results.count(True) == 1
    assert breaker.state == HALF_OPEN
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]
