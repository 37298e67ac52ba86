"""Shared by the rollup and review tests: windows written by hand, with exactly known figures,
as a served process's flusher writes them."""

import bisect
import random
from datetime import UTC, datetime, timedelta

from monitoring.metrics.recorder import LATENCY_BUCKETS_MS, empty_group
from monitoring.models import MetricWindow

# A whole hour three days ago: the tests' windows are written around it.
_hour = int(datetime.now(UTC).timestamp()) // 3600 * 3600
T0 = datetime.fromtimestamp(_hour, tz=UTC) - timedelta(days=3)


def at(minutes: float = 0, hours: float = 0, days: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, hours=hours, days=days)


def requests(*statuses_and_ms: tuple[int, float]) -> dict:
    """A route group's figures for requests answered (status, latency in ms), as recorded."""
    group = empty_group()
    for status, ms in statuses_and_ms:
        group["count"] += 1
        group["errors"] += status >= 500
        status_class = f"{status // 100}xx"
        group["status"][status_class] = group["status"].get(status_class, 0) + 1
        group["latency_sum_ms"] += ms
        group["latency_max_ms"] = max(group["latency_max_ms"], ms)
        group["buckets"][bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
    return group


def lookups(hits: int, misses: int) -> dict:
    return {"hits": hits, "misses": misses}


def redis_sample(
    when: datetime, connected: bool = True, used: int = 0, max_memory: int = 0, checked=True
) -> dict:
    return {
        "at": when.timestamp(),
        "checked": checked,
        "connected": connected,
        "latency_ms": 0.5 if connected else None,
        "used_memory_bytes": used if connected else None,
        "max_memory_bytes": max_memory if connected else None,
    }


def window(process: str, ended_at: datetime, seconds: float = 5, **data) -> MetricWindow:
    """One window of `process` ending at `ended_at`; data: requests={group: ...},
    cache={namespace: ...}, counters={...}, server=redis_sample(...)."""
    body = {
        "requests": data.get("requests", {}),
        "cache": data.get("cache", {}),
        "counters": data.get("counters", {}),
        "breaker": {"changes": [], "state": "closed"},
    }
    if "server" in data:
        body["server"] = data["server"]
    return MetricWindow.objects.create(
        process=process,
        started_at=ended_at - timedelta(seconds=seconds),
        ended_at=ended_at,
        data=body,
    )


def a_busy_week(end: datetime) -> dict:
    """A week of history up to `end`, written as the rollups would have left it (a minute row
    for every minute, an hour row for every whole hour, the marks moved on): traffic on every
    route group, the hit rate climbing after caching is turned on, Redis memory growing, and a
    four-minute Redis outage on the fourth day with two call initiations answered with the
    fallback. Returns the counts the review should show."""
    from monitoring.metrics import rollups
    from monitoring.models import MetricRollup, RollupMark, SwitchAudit

    rng = random.Random(7)
    last = rollups.floor_to(end, 60)
    first = last - timedelta(days=7) + timedelta(minutes=2)
    outage = first + timedelta(days=3, hours=14)
    windows, initiations = [], 0
    for i in range(int((last - first).total_seconds() // 60)):
        moment = first + timedelta(minutes=i, seconds=30)
        down = outage <= moment < outage + timedelta(minutes=4)
        windows.append(_busy_minute(rng, moment, i, down))
        initiations += windows[-1].data["requests"]["webhook_initiation"]["count"]
    windows[int((outage - first).total_seconds() // 60)].data["counters"] = {FALLBACK: 2}
    minutes = rollups.minutes_of(windows)
    rows = [MetricRollup(resolution="minute", started_at=s, data=d) for s, d in minutes.items()]
    hours = rollups.hours_of(r for r in rows if r.started_at >= rollups.ceil_to(first, 3600))
    complete = {s: d for s, d in hours.items() if s + timedelta(hours=1) <= last}
    rollups.upsert("minute", minutes)
    rollups.upsert("hour", complete)
    for resolution, mark in (("minute", last), ("hour", rollups.floor_to(last, 3600))):
        row, _ = RollupMark.objects.get_or_create(resolution=resolution)
        if row.rolled_up_to is None or row.rolled_up_to < mark:
            RollupMark.objects.filter(pk=resolution).update(rolled_up_to=mark)
    audit = SwitchAudit.objects.create(
        actor="olivia-ops",
        action=SwitchAudit.Action.ENABLE,
        source=SwitchAudit.Source.DASHBOARD,
        old_enabled=False,
        new_enabled=True,
        generation=2,
        reason="rollout phase 2",
    )
    SwitchAudit.objects.filter(pk=audit.pk).update(at=first + timedelta(hours=2))
    return {"initiations": initiations, "fallback": 2, "redis_down_minutes": 4}


FALLBACK = "webhook.elevenlabs.initiation_fallback"
MB = 1048576


def _busy_minute(rng: random.Random, moment: datetime, i: int, down: bool) -> MetricWindow:
    """One minute of traffic: busier by day (UTC), the hit rate climbing over the first days."""
    busy = 1 + 2 * (8 <= moment.hour < 20)
    hit_rate = min(0.9, 0.45 + i / 10080)
    lookups_made = 6 * busy
    hits = 0 if down else round(lookups_made * hit_rate * rng.uniform(0.9, 1.1))
    groups = {
        "webhook_initiation": requests(
            *[(200, rng.uniform(3, 9 if not down else 40)) for _ in range(busy)]
        ),
        "webhook_sms": requests(*[(200, rng.uniform(8, 30)) for _ in range(2 * busy)]),
        "webhook_post_call": requests((200, rng.uniform(30, 90))),
        "dashboard": requests((200, rng.uniform(15, 60))),
        "monitoring_api": requests((503 if down else 200, rng.uniform(1, 3))),
    }
    used = 96 * MB + i * 2000 + rng.randint(0, 200_000)
    return MetricWindow(
        process="web-1",
        started_at=moment - timedelta(seconds=30),
        ended_at=moment,
        data={
            "requests": groups,
            "cache": {
                "ctx": lookups(min(hits, lookups_made), lookups_made - min(hits, lookups_made))
            },
            "counters": {},
            "server": redis_sample(moment, connected=not down, used=used, max_memory=256 * MB),
        },
    )
