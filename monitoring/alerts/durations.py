"""Durations as people type them: "90s", "30m", "2h", "1d", "1h30m"."""

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    cleaned = (text or "").strip().lower()
    parts = _PART.findall(cleaned)
    if not cleaned or not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30m, 2h, 1d or 1h30m")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit]: int(number)})
    if total <= timedelta():
        raise ValueError("a duration must be longer than zero")
    return total
