"""Named event counters kept in the process (webhook fallbacks, failures, duplicates...).
Any app may count here; the monitoring windows will read `snapshot()`."""

import threading
from collections import Counter

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def increment(name: str, n: int = 1) -> None:
    with _lock:
        _counts[name] += n


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def take() -> dict[str, int]:
    """The counts since the last take, and start again from zero."""
    with _lock:
        taken = dict(_counts)
        _counts.clear()
        return taken


def reset() -> None:
    with _lock:
        _counts.clear()
