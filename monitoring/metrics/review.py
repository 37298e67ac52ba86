"""The weekly review: a period's figures from the history, and the runbook's success criteria
each marked met or missed with its figure (`manage.py ops_report`, the dashboard's Review page).

Definitions (docs/MONITORING_API.md, "The review"):
- uptime counts closed minutes, those rolled up, from the later of the period's start and the
  first minute of history. The app is up in a minute in which some process wrote a window; Redis
  is up in a minute in which it was sampled and every sample reached it (minutes in which it was
  not sampled, caching off or no evaluator, count neither way);
- the Redis fallback is graceful when the traffic's error rate over the minutes Redis was down
  stays within the error-rate alert's threshold;
- the memory projection is a least-squares line through the used memory of each hour (the
  latest connected sample of the hour), and the time it reaches maxmemory."""

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from monitoring.metrics import history, rollups
from monitoring.metrics.rollups import HOUR, MINUTE, ceil_to, floor_to
from monitoring.models import MetricRollup, SwitchAudit

PERIOD = re.compile(r"^(\d{1,3})([hd])$")
DAY = 86400


def period_seconds(name: str) -> int:
    """ "7d", "30d", "24h"... as seconds; ValueError for anything else."""
    match = PERIOD.match(name)
    if not match or int(match[1]) == 0:
        raise ValueError(f"period must be hours or days, like 24h or 7d (not {name!r})")
    return int(match[1]) * (DAY if match[2] == "d" else 3600)


def report(period: str = "7d", now: datetime | None = None) -> dict:
    seconds = period_seconds(period)
    end = now or timezone.now()
    start = end - timedelta(seconds=seconds)
    total = history.merged(start, end)
    figures = history.figures_of(total, seconds)
    body = {
        "period": {"name": period, "from": start.isoformat(), "to": end.isoformat()},
        "processes": figures["processes"],
        "hit_rate": hit_rate(figures, start, end),
        "route_groups": route_groups(figures),
        "error_rate": error_rate(figures["traffic"]),
        "initiations": initiations(figures),
        "redis_memory": redis_memory(start, end),
        "uptime": uptime(start, end),
        "fallback": redis_down_minutes(start, end),
    }
    body["criteria"] = criteria(body)
    return body


# --- figures --------------------------------------------------------------------------------


def _hit_rate_between(start: datetime, end: datetime) -> dict:
    cache = history.figures_of(history.merged(start, end), 1)["cache"]
    return {"hit_rate": cache["hit_rate"], "lookups": cache["lookups"]}


def hit_rate(figures: dict, start: datetime, end: datetime) -> dict:
    middle = start + (end - start) / 2
    first, second = _hit_rate_between(start, middle), _hit_rate_between(middle, end)
    change = None
    if first["hit_rate"] is not None and second["hit_rate"] is not None:
        change = round(second["hit_rate"] - first["hit_rate"], 4)
    warmed_from = warm_up_end(start, end)
    after = _hit_rate_between(warmed_from, end) if warmed_from < end else None
    return {
        "value": figures["cache"]["hit_rate"],
        "lookups": figures["cache"]["lookups"],
        "after_warm_up": after,
        "warm_up_ended_at": warmed_from.isoformat(),
        "trend": {"first_half": first, "second_half": second, "change": change},
        "daily": daily_hit_rates(start, end),
    }


def warm_up_end(start: datetime, end: datetime) -> datetime:
    """When the hit rate starts to be judged: REVIEW_WARM_UP_HOURS after caching was last
    turned on (if that was in the period or just before it), else the period's start."""
    enabled = (
        SwitchAudit.objects.filter(action=SwitchAudit.Action.ENABLE, at__lt=end)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    if enabled is None:
        return start
    return max(start, enabled + timedelta(hours=settings.REVIEW_WARM_UP_HOURS))


def daily_hit_rates(start: datetime, end: datetime) -> list[dict]:
    """One figure per day, days counted back from the period's end."""
    days = []
    day_end = end
    while day_end > start:
        day_start = max(start, day_end - timedelta(seconds=DAY))
        days.append({"from": day_start.isoformat(), **_hit_rate_between(day_start, day_end)})
        day_end = day_start
    return days[::-1]


def route_groups(figures: dict) -> dict:
    keep = ("requests", "p50_ms", "p95_ms", "error_rate")
    return {
        name: {key: group[key] for key in keep} for name, group in figures["route_groups"].items()
    }


def error_rate(traffic: dict) -> dict:
    return {key: traffic[key] for key in ("requests", "errors", "error_rate")}


def initiations(figures: dict) -> dict:
    """The call initiations, and how many were answered with the fallback (its defaults after
    a timeout or an internal fault: the runbook's "webhook timeouts")."""
    group = figures["route_groups"].get(settings.REVIEW_INITIATION_GROUP, {})
    answered = group.get("requests", 0)
    fallback = sum(figures["counters"].get(name, 0) for name in settings.REVIEW_FALLBACK_COUNTERS)
    return {
        "requests": answered,
        "fallback": fallback,
        "fallback_rate": round(fallback / answered, 4) if answered else None,
    }


# --- Redis memory ---------------------------------------------------------------------------


def hourly_memory(start: datetime, end: datetime) -> list[tuple[float, int, int]]:
    """(time, used bytes, maxmemory bytes) of each hour's latest connected sample; the hours
    rolled up, then the time since (its minutes and windows merged) as one more."""
    hour_mark = rollups.watermark(HOUR) or ceil_to(start, 3600)
    hours = [row.data for row in rollups.rows_between(HOUR, ceil_to(start, 3600), hour_mark)]
    hours.append(history.merged(max(start, hour_mark), end))
    samples = []
    for data in hours:
        server = data.get("server", {})
        if server.get("connected") and server.get("used_memory_bytes") is not None:
            samples.append(
                (server["at"], server["used_memory_bytes"], server.get("max_memory_bytes") or 0)
            )
    return samples


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of the line closest to the points."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return slope, mean_y - slope * mean_x


def redis_memory(start: datetime, end: datetime) -> dict:
    samples = hourly_memory(start, end)
    if not samples:
        return {"used_bytes": None, "max_bytes": None, "projection": "no samples"}
    _, used, maxmemory = samples[-1]
    body = {"used_bytes": used, "max_bytes": maxmemory or None, "hours": len(samples)}
    if len(samples) < 2:
        return {**body, "growth_bytes_per_day": None, "projection": "not enough samples"}
    slope, intercept = least_squares([(t, u) for t, u, _ in samples])
    body["growth_bytes_per_day"] = round(slope * DAY)
    body["reaches_max_at"] = None
    if slope <= 0:
        return {**body, "projection": "not growing"}
    if not maxmemory:
        return {**body, "projection": "growing; no maxmemory set"}
    crossing = datetime.fromtimestamp((maxmemory - intercept) / slope, tz=end.tzinfo)
    body["reaches_max_at"] = max(crossing, end).isoformat()
    return {**body, "projection": f"reaches maxmemory on {max(crossing, end):%Y-%m-%d}"}


# --- uptime ---------------------------------------------------------------------------------


def uptime(start: datetime, end: datetime) -> dict:
    closed_end = min(end, rollups.watermark(MINUTE) or start)
    first = first_minute(start)
    span_start = max(ceil_to(start, 60), first) if first else closed_end
    minutes = max(0, int((closed_end - span_start).total_seconds() // 60))
    total = history.merged(span_start, closed_end) if minutes else rollups.empty_rollup()
    up, sampled = total["app_minutes"], total["redis_minutes"]["sampled"]
    down = total["redis_minutes"]["down"]
    return {
        "from": span_start.isoformat(),
        "to": closed_end.isoformat(),
        "app": {"minutes": minutes, "up": up, "value": _ratio(up, minutes)},
        "redis": {"sampled": sampled, "down": down, "value": _ratio(sampled - down, sampled)},
    }


def first_minute(start: datetime) -> datetime | None:
    """The first minute of history in the period: its first minute row, or the start of an
    hour before it whose minutes are pruned."""
    minute = _first_row(MINUTE, ceil_to(start, 60))
    hour = _first_row(HOUR, floor_to(start, 3600))
    if hour is not None and (minute is None or minute >= hour + timedelta(hours=1)):
        return max(hour, ceil_to(start, 60))
    return minute


def _first_row(resolution: str, since: datetime) -> datetime | None:
    rows = MetricRollup.objects.filter(resolution=resolution, started_at__gte=since)
    return rows.order_by("started_at").values_list("started_at", flat=True).first()


def redis_down_minutes(start: datetime, end: datetime) -> dict:
    """The traffic served in the minutes Redis was down (the minutes kept: see the retention)."""
    rows = MetricRollup.objects.filter(
        resolution=MINUTE,
        started_at__gte=ceil_to(start, 60),
        started_at__lt=end,
        data__redis_minutes__down=1,
    )
    total = rollups.empty_rollup()
    for row in rows:
        rollups.merge_rollup(total, row.data)
    traffic = history.figures_of(total, 60)["traffic"]
    return {"minutes": total["redis_minutes"]["down"], **error_rate(traffic)}


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


# --- the success criteria -------------------------------------------------------------------


def criteria(body: dict) -> list[dict]:
    return [_hit_rate_criterion(body), _timeouts_criterion(body), _uptime_criterion(body)]


def _percent(fraction: float | None, places: int = 1) -> str:
    return "—" if fraction is None else f"{fraction * 100:.{places}f} %"


def _hit_rate_criterion(body: dict) -> dict:
    target = settings.REVIEW_HIT_RATE_TARGET
    after = body["hit_rate"]["after_warm_up"]
    rate = after["hit_rate"] if after else None
    figure = (
        f"{_percent(rate)} of {after['lookups']:,} lookups after warm-up"
        if rate is not None
        else "no lookups after warm-up"
    )
    return {
        "name": "hit_rate",
        "label": f"Hit rate ≥ {target * 100:g} % after warm-up",
        "met": None if rate is None else rate >= target,
        "value": rate,
        "figure": figure,
    }


def _timeouts_criterion(body: dict) -> dict:
    fallback, answered = body["initiations"]["fallback"], body["initiations"]["requests"]
    return {
        "name": "webhook_timeouts",
        "label": "Zero webhook timeouts",
        # No call initiations at all: nothing to judge.
        "met": fallback == 0 if answered else None,
        "value": fallback,
        "figure": f"{fallback:,} of {answered:,} call initiations answered with the fallback",
    }


def _uptime_criterion(body: dict) -> dict:
    target = settings.REVIEW_REDIS_UPTIME_TARGET
    redis, fallback = body["uptime"]["redis"], body["fallback"]
    graceful = (fallback["error_rate"] or 0) <= settings.ALERT_ERROR_RATE_CRITICAL
    met = None if redis["value"] is None else redis["value"] >= target and graceful
    figure = (
        f"{_percent(redis['value'], 2)} ({redis['down']:,} of {redis['sampled']:,} sampled minutes "
        f"down); traffic error rate while down {_percent(fallback['error_rate'], 2)}"
    )
    return {
        "name": "redis_uptime",
        "label": f"{target * 100:g} % Redis uptime with graceful fallback",
        "met": met,
        "value": redis["value"],
        "figure": figure,
    }
