"""Per-namespace cache counters, kept in the process (the monitoring windows read them)."""

import threading
from dataclasses import asdict, dataclass, field, fields


@dataclass
class NamespaceStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    # Reads answered straight from the database because caching is off or the breaker is open.
    bypassed: int = 0
    stores: int = 0
    # Stores refused because a write invalidated the key while the value was being loaded.
    stale_stores_refused: int = 0
    invalidations: int = 0
    # Entries loaded and stored right after a write invalidated them (write-through).
    refreshes: int = 0
    # Reads answered from the database because the server or generation had to be checked
    # first (another server behind the address, a marker gone, a new generation elsewhere).
    unverified: int = 0
    # Values not stored because they are not plain data.
    unstorable: int = 0
    redis_calls: int = 0
    redis_seconds: float = 0.0
    redis_max_seconds: float = 0.0

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None


# The figures that are counts of events (the seconds are summed as well; the maximum is not).
COUNTS = tuple(f.name for f in fields(NamespaceStats) if f.type is int)


@dataclass
class GateStats:
    namespaces: dict[str, NamespaceStats] = field(default_factory=dict)
    breaker_changes: list[tuple[float, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, namespace: str, counter: str, n: int = 1) -> None:
        with self._lock:
            ns = self._ns(namespace)
            setattr(ns, counter, getattr(ns, counter) + n)

    def redis_call(self, namespace: str, seconds: float) -> None:
        with self._lock:
            ns = self._ns(namespace)
            ns.redis_calls += 1
            ns.redis_seconds += seconds
            if seconds > ns.redis_max_seconds:
                ns.redis_max_seconds = seconds

    def breaker_changed(self, at: float, old: str, new: str) -> None:
        with self._lock:
            self.breaker_changes.append((at, old, new))
            del self.breaker_changes[:-100]

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {name: asdict(ns) for name, ns in self.namespaces.items()}

    def take(self) -> dict[str, dict]:
        """The counters since the last take, and start again from zero."""
        with self._lock:
            taken = {name: asdict(ns) for name, ns in self.namespaces.items()}
            self.namespaces.clear()
            return taken

    def take_breaker_changes(self) -> list[tuple[float, str, str]]:
        with self._lock:
            changes = list(self.breaker_changes)
            self.breaker_changes.clear()
            return changes

    def reset(self) -> None:
        with self._lock:
            self.namespaces.clear()
            self.breaker_changes.clear()

    def _ns(self, namespace: str) -> NamespaceStats:
        ns = self.namespaces.get(namespace)
        if ns is None:
            ns = self.namespaces[namespace] = NamespaceStats()
        return ns
