"""The cache-gate tests' helpers: the gate's own counters (`gate.stats`), the Redis commands a
server counted (INFO commandstats), and keys as the gate names them."""

import time
from collections.abc import Callable

from monitoring.cache import Namespace, gate, switch
from tests.redis_servers import RedisServer

ZERO = {
    "hits": 0,
    "misses": 0,
    "errors": 0,
    "bypassed": 0,
    "stores": 0,
    "stale_stores_refused": 0,
    "invalidations": 0,
    "unverified": 0,
    "unstorable": 0,
    "redis_calls": 0,
}
LEAD = Namespace("lead", shape=3, ttl=120)


def counters(namespace: str) -> dict[str, int]:
    """The gate's counters for `namespace`, latency left out (never asserted)."""
    stats = gate.stats.snapshot().get(namespace, ZERO)
    return {name: stats[name] for name in ZERO}


def counts(**nonzero: int) -> dict[str, int]:
    return {**ZERO, **nonzero}


class Loader:
    """A loader that counts its calls and returns `value`."""

    def __init__(self, value=None) -> None:
        self.value = value
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.value


def generation() -> int:
    return switch.read_state().generation


def value_key(prefix: str, gen: int, namespace: Namespace, key: str) -> str:
    return f"{prefix}:{gen}:v:{namespace.name}:m1.{namespace.shape}:{key}"


def commands_sent(server: RedisServer, action: Callable[[], object]) -> dict[str, int]:
    """Commands the server ran during `action()`, by name (INFO commandstats; the commands a
    script runs count too)."""
    before = server.command_calls()
    action()
    after = server.command_calls()
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in set(before) | set(after)}
    return {name: n for name, n in delta.items() if n}


def wait_for_probe_time(timeout: float = 10.0) -> None:
    """Until the breaker's cool-down is over (no timing is asserted, only waited for)."""
    deadline = time.monotonic() + timeout
    while gate.breaker.seconds_until_probe() > 0:
        assert time.monotonic() < deadline, "the breaker's cool-down never ended"
        time.sleep(0.02)
