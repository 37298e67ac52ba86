"""The history: every process's windows merged into one row per minute, and minutes into one
row per hour, each kept for its own retention.

Any process's flusher may roll up; the resolution's mark row, locked for the transaction that
writes the buckets and moves the mark, makes one of them do it and the others skip (a bucket
before the mark is never added again). A minute is rolled up METRICS_ROLLUP_DELAY_SECONDS
after it ends, once every process has flushed into it; a window written later than that is not
in the history (it is still in the raw windows until they are pruned).

A minute's row holds the merged requests, cache and counters, the processes and windows seen,
the latest connected Redis sample with how many samples there were and how many found Redis
unreachable, and the minutes it stands for: `app_minutes` (1: some process wrote a window) and
`redis_minutes` (sampled: 1 if Redis was sampled at all; down: 1 if any sample found it
unreachable). An hour's row is its minutes merged the same way, those counts summed."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from monitoring.metrics.aggregate import empty_cache, merge_cache, merge_group
from monitoring.metrics.recorder import empty_group
from monitoring.models import MetricRollup, MetricWindow, RollupMark

MINUTE = MetricRollup.Resolution.MINUTE.value
HOUR = MetricRollup.Resolution.HOUR.value
STEPS = {MINUTE: 60, HOUR: 3600}


def floor_to(moment: datetime, step: int) -> datetime:
    seconds = int(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % step, tz=UTC)


def ceil_to(moment: datetime, step: int) -> datetime:
    floored = floor_to(moment, step)
    return floored if floored == moment else floored + timedelta(seconds=step)


# --- merging --------------------------------------------------------------------------------


def empty_rollup() -> dict:
    return {
        "requests": {},
        "cache": {},
        "counters": {},
        "processes": [],
        "windows": 0,
        "server": {"samples": 0, "down": 0},
        "app_minutes": 0,
        "redis_minutes": {"sampled": 0, "down": 0},
    }


def merge_rollup(total: dict, part: dict) -> None:
    """Add a rollup (a minute's, an hour's) to `total`."""
    for name, group in part.get("requests", {}).items():
        merge_group(total["requests"].setdefault(name, empty_group()), group)
    for name, ns in part.get("cache", {}).items():
        merge_cache(total["cache"].setdefault(name, empty_cache()), ns)
    for name, n in part.get("counters", {}).items():
        total["counters"][name] = total["counters"].get(name, 0) + n
    total["processes"] = sorted(set(total["processes"]) | set(part.get("processes", [])))
    total["windows"] += part.get("windows", 0)
    _merge_server(total["server"], part.get("server", {}))
    total["app_minutes"] += part.get("app_minutes", 0)
    for key in ("sampled", "down"):
        total["redis_minutes"][key] += part.get("redis_minutes", {}).get(key, 0)


def _merge_server(total: dict, part: dict) -> None:
    total["samples"] += part.get("samples", 0)
    total["down"] += part.get("down", 0)
    if part.get("connected") and part.get("at", 0) >= total.get("at", 0):
        for key in ("at", "connected", "latency_ms", "used_memory_bytes", "max_memory_bytes"):
            total[key] = part.get(key)


def window_part(window: MetricWindow) -> dict:
    """A raw window in a rollup's shape (its Redis sample counted, no minutes yet)."""
    data = window.data
    part = {
        "requests": data.get("requests", {}),
        "cache": data.get("cache", {}),
        "counters": data.get("counters", {}),
        "processes": [window.process],
        "windows": 1,
    }
    sample = data.get("server")
    # A sample taken while caching was off did not check Redis (windows written before the
    # "checked" flag was kept did).
    if sample and sample.get("checked", True):
        connected = bool(sample.get("connected"))
        part["server"] = {**sample, "samples": 1, "down": 0 if connected else 1}
    return part


def close_minute(minute: dict) -> dict:
    """The minutes a merged minute stands for, once all its windows are in."""
    server = minute["server"]
    minute["app_minutes"] = 1 if minute["windows"] else 0
    minute["redis_minutes"] = {
        "sampled": 1 if server["samples"] else 0,
        "down": 1 if server["down"] else 0,
    }
    return minute


def minutes_of(windows: Iterable[MetricWindow]) -> dict[datetime, dict]:
    """The windows merged per minute they ended in."""
    minutes: dict[datetime, dict] = {}
    for window in windows:
        start = floor_to(window.ended_at, 60)
        merge_rollup(minutes.setdefault(start, empty_rollup()), window_part(window))
    return {start: close_minute(minute) for start, minute in minutes.items()}


def hours_of(rows: Iterable[MetricRollup]) -> dict[datetime, dict]:
    hours: dict[datetime, dict] = {}
    for row in rows:
        merge_rollup(hours.setdefault(floor_to(row.started_at, 3600), empty_rollup()), row.data)
    return hours


# --- rolling up -----------------------------------------------------------------------------


def roll_up(now: datetime | None = None) -> dict[str, int]:
    """Roll up every complete minute, then every complete hour; the buckets written of each."""
    now = now or timezone.now()
    delay = timedelta(seconds=settings.METRICS_ROLLUP_DELAY_SECONDS)
    minutes = _roll(MINUTE, floor_to(now - delay, 60), _windows_between, minutes_of)
    mark = watermark(MINUTE)
    hours = _roll(HOUR, floor_to(mark, 3600), _minutes_between, hours_of) if mark else 0
    return {MINUTE: minutes, HOUR: hours}


def _roll(resolution: str, until: datetime, sources, merge) -> int:
    _ensure_mark(resolution)
    with transaction.atomic():
        mark = (
            RollupMark.objects.select_for_update(skip_locked=True)
            .filter(resolution=resolution)
            .first()
        )
        if mark is None:  # another process is rolling this resolution up right now
            return 0
        buckets = merge(sources(mark.rolled_up_to, until))
        upsert(resolution, buckets)
        if mark.rolled_up_to is None or until > mark.rolled_up_to:
            mark.rolled_up_to = until
            mark.save(update_fields=["rolled_up_to"])
        return len(buckets)


def _ensure_mark(resolution: str) -> None:
    if RollupMark.objects.filter(resolution=resolution).exists():
        return
    try:
        with transaction.atomic():
            RollupMark.objects.create(resolution=resolution, rolled_up_to=None)
    except IntegrityError:
        pass  # another process created it first


def _windows_between(start: datetime | None, end: datetime):
    rows = MetricWindow.objects.filter(ended_at__lt=end)
    if start is not None:
        rows = rows.filter(ended_at__gte=start)
    return rows.order_by("ended_at").iterator()


def _minutes_between(start: datetime | None, end: datetime):
    rows = MetricRollup.objects.filter(resolution=MINUTE, started_at__lt=end)
    if start is not None:
        rows = rows.filter(started_at__gte=start)
    return rows.order_by("started_at").iterator()


def upsert(resolution: str, buckets: dict[datetime, dict]) -> None:
    """Written whole (a bucket rolled up again replaces its row, never adds to it)."""
    MetricRollup.objects.bulk_create(
        [MetricRollup(resolution=resolution, started_at=s, data=d) for s, d in buckets.items()],
        update_conflicts=True,
        unique_fields=["resolution", "started_at"],
        update_fields=["data"],
        batch_size=500,
    )


def watermark(resolution: str) -> datetime | None:
    mark = RollupMark.objects.filter(resolution=resolution).first()
    return mark.rolled_up_to if mark else None


# --- retention and reading ------------------------------------------------------------------


def prune_rollups(now: datetime | None = None) -> dict[str, int]:
    """Delete the minutes and hours older than their retention."""
    now = now or timezone.now()
    keep = {
        MINUTE: timedelta(days=settings.METRICS_MINUTE_RETENTION_DAYS),
        HOUR: timedelta(days=settings.METRICS_HOUR_RETENTION_DAYS),
    }
    deleted = {}
    for resolution, days in keep.items():
        rows = MetricRollup.objects.filter(resolution=resolution, started_at__lt=now - days)
        deleted[resolution], _ = rows.delete()
    return deleted


def rows_between(resolution: str, start: datetime, end: datetime) -> list[MetricRollup]:
    """The buckets that started in [start, end), oldest first."""
    return list(
        MetricRollup.objects.filter(
            resolution=resolution, started_at__gte=start, started_at__lt=end
        ).order_by("started_at")
    )
