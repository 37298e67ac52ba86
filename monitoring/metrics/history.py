"""Figures for long periods, read from the right resolution: the hours rolled up, the minutes
rolled up since the last hour (and before the first whole hour of the period), and the raw
windows since the last minute rolled up. A period read this way starts on a whole minute."""

from datetime import datetime, timedelta

from django.utils import timezone

from monitoring.metrics import rollups
from monitoring.metrics.aggregate import aggregate, summarize
from monitoring.metrics.rollups import HOUR, MINUTE, ceil_to, floor_to
from monitoring.metrics.series import MAX_POINTS, Bucket
from monitoring.models import MetricWindow

# Periods up to this long are read from the raw windows (kept METRICS_RETENTION_HOURS).
RAW_SECONDS = 3600
# The charts' longer ranges: (resolution, seconds per point, points).
RANGES = {
    "1h": (MINUTE, 60, 60),
    "24h": (MINUTE, 300, 288),
    "7d": (HOUR, 3600, 168),
    "30d": (HOUR, 3600, 720),
}


def figures(seconds: int, now: datetime | None = None) -> dict:
    """Every process's figures over the last `seconds` (as `aggregate` has them)."""
    if seconds <= RAW_SECONDS:
        return aggregate(seconds)
    now = now or timezone.now()
    total = merged(now - timedelta(seconds=seconds), now)
    return figures_of(total, seconds)


def figures_of(total: dict, seconds: int) -> dict:
    return summarize(
        total["requests"], total["cache"], total["counters"], seconds, total["processes"]
    )


def merged(start: datetime, end: datetime) -> dict:
    """One rollup-shaped total of everything between `start` and `end`."""
    total = rollups.empty_rollup()
    for part in parts(start, end):
        rollups.merge_rollup(total, part)
    return total


def parts(start: datetime, end: datetime) -> list[dict]:
    """Rollup-shaped pieces covering [start, end) once each, coarsest first."""
    minute_mark = _before(rollups.watermark(MINUTE), end)
    hour_mark = _before(rollups.watermark(HOUR), minute_mark)
    first_minute, first_hour = ceil_to(start, 60), ceil_to(start, 3600)
    if minute_mark is None or minute_mark <= first_minute:
        return _raw_since(start, end)
    spans = [(MINUTE, first_minute, minute_mark)]
    if hour_mark is not None and hour_mark > first_hour:
        spans = [
            (MINUTE, first_minute, first_hour),
            (HOUR, first_hour, hour_mark),
            (MINUTE, hour_mark, minute_mark),
        ]
    pieces = [row.data for span in spans for row in rollups.rows_between(*span)]
    return pieces + _raw_since(minute_mark, end)


def _before(mark: datetime | None, limit: datetime | None) -> datetime | None:
    if mark is None or limit is None:
        return mark
    return min(mark, limit)


def _raw_since(start: datetime, end: datetime) -> list[dict]:
    windows = MetricWindow.objects.filter(ended_at__gte=start, ended_at__lt=end)
    return [rollups.window_part(w) for w in windows.order_by("ended_at")]


# --- chart series ---------------------------------------------------------------------------


def series(range_name: str, now: datetime | None = None) -> dict:
    """One point per step over a chart's range, from its resolution's rows. Points stop at
    the last bucket rolled up (the live points and the raw series draw the present)."""
    resolution, step, count = RANGES[range_name]
    now = now or timezone.now()
    ends = _bucket_ends(step, min(count, MAX_POINTS), _last_end(resolution, step, now))
    buckets = [Bucket(end) for end in ends]
    if buckets:
        first_start = ends[0] - timedelta(seconds=step)
        for row in rollups.rows_between(resolution, first_start, ends[-1]):
            index = int((row.started_at - first_start).total_seconds() // step)
            buckets[index].add_data(row.data)
    return {
        "window": range_name,
        "resolution": resolution,
        "step_seconds": step,
        "points": [bucket.point(step) for bucket in buckets],
    }


def _last_end(resolution: str, step: int, now: datetime) -> datetime:
    mark = rollups.watermark(resolution)
    last = floor_to(now, step)
    return last if mark is None else min(last, floor_to(mark, step))


def _bucket_ends(step: int, count: int, last_end: datetime) -> list[datetime]:
    return [last_end - timedelta(seconds=step * i) for i in range(count - 1, -1, -1)]
