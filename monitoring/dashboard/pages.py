"""What the dashboard pages show, assembled from the monitoring services (no requests here)."""

import functools
from dataclasses import dataclass, field

import markdown
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from monitoring.alerts import silences
from monitoring.api import health
from monitoring.api.alerts import filtered_alerts
from monitoring.cache import controls, switch
from monitoring.metrics import review as review_figures
from monitoring.metrics.middleware import OTHER_GROUP

TILES = [
    ("database", "Database"),
    ("redis", "Redis"),
    ("switch", "Switch"),
    ("breaker", "Breaker"),
    ("channel_layer", "Channel layer"),
    ("evaluator", "Evaluator"),
    ("notifications", "Notifications"),
]
# The overview's charts: (id, title, unit, the names of its series). The page's script knows
# which figures each draws.
CHARTS = [
    ("hit-rate", "Cache hit rate", "%", ["hit rate"]),
    ("request-rate", "Requests", "req/s", ["requests"]),
    ("latency", "Latency p50 / p95, all requests", "ms", ["p50", "p95"]),
    ("error-rate", "Error rate (5xx)", "%", ["errors"]),
    ("redis-latency", "Redis latency", "ms", ["ping", "per call"]),
    ("redis-memory", "Redis memory", "MB", ["used"]),
]


# The charts' ranges: (name, button label, heading, words for "… ago", how it is drawn). The
# first is raw windows with live points; the others are read from the rollups.
CHART_RANGES = [
    (
        "15m",
        "15 min",
        "Last 15 minutes",
        "15 minutes",
        "One point per 15 seconds from every process, then a live point every few seconds "
        "(rolling last minute).",
    ),
    (
        "1h",
        "1 h",
        "Last hour",
        "hour",
        "One point per minute from the per-minute history (every process merged), "
        "fetched again every minute.",
    ),
    (
        "24h",
        "24 h",
        "Last 24 hours",
        "24 hours",
        "One point per 5 minutes from the per-minute history, fetched again every minute.",
    ),
    (
        "7d",
        "7 d",
        "Last 7 days",
        "7 days",
        "One point per hour from the per-hour history, fetched again every minute.",
    ),
    (
        "30d",
        "30 d",
        "Last 30 days",
        "30 days",
        "One point per hour from the per-hour history, fetched again every minute.",
    ),
]


@dataclass(frozen=True)
class ChartRange:
    name: str
    label: str
    heading: str
    span: str
    description: str

    @property
    def series_url(self) -> str:
        url = reverse("monitoring-api:metric-series")
        return f"{url}?minutes=15&step=15" if self.name == "15m" else f"{url}?window={self.name}"


@dataclass(frozen=True)
class Tile:
    name: str
    label: str
    status: str
    detail: str
    # The check's observed values: the page's charts read Redis's ping and memory from them.
    observed: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.name.replace("_", "-")


def switch_panel() -> dict:
    """The switch as stored now, with what the page says about it."""
    state = switch.read_state()
    return {
        "state": state,
        "source_label": controls.SOURCE_LABELS[state.source],
        "state_label": controls.state_label(state),
        "why_unavailable": "" if state.can_flip else switch.why_unavailable(),
    }


def health_tiles() -> dict:
    """The health word and one tile per check (the overview's "health" fragment)."""
    document = health.full_health()
    return {
        "health_status": document["status"],
        "tiles": [tile(name, label, document["checks"][name]) for name, label in TILES],
    }


def active_alerts() -> dict:
    """The overview's "alerts" fragment: the open alerts, and the silences in force."""
    in_force = [item for item in silences_shown() if item["in_force"]]
    return {"active_alerts": list(filtered_alerts("active")), "silences_in_force": in_force}


def silences_shown() -> list[dict]:
    """The silences in force or to come, each with its window and what it says."""
    now = timezone.now()
    return [
        {
            "silence": silence,
            "start": start,
            "end": end,
            "in_force": start <= now,
            "description": silences.describe(silence),
        }
        for silence, start, end in silences.in_force_or_coming(now)
    ]


def overview() -> dict:
    return {
        **health_tiles(),
        "switch": switch_panel(),
        **active_alerts(),
        "charts": CHARTS,
        "chart_ranges": [ChartRange(*spec) for spec in CHART_RANGES],
        "not_traffic": "|".join(settings.METRICS_NOT_TRAFFIC),
        "route_groups": route_groups(),
    }


def route_groups() -> list[tuple[str, str]]:
    """(name, slug) of every route group a request can be counted in, for the latency charts
    by group (each drawn once it has figures)."""
    names = dict.fromkeys(group for _, group in settings.METRICS_ROUTE_GROUPS)
    return [(name, name.replace("_", "-")) for name in [*names, OTHER_GROUP]]


def tile(name: str, label: str, check: dict) -> Tile:
    observed = check.get("observed", {})
    return Tile(name, label, tile_status(check), tile_detail(name, check), observed)


def tile_status(check: dict) -> str:
    """The colour a tile shows: its check's status, or "fail" (red) for an incident such as
    Redis lost while caching is on, which the health document itself reports as a warning."""
    return "fail" if check.get("incident") else check["status"]


def tile_detail(name: str, check: dict) -> str:
    """One line about a health check."""
    if check.get("error"):
        return check["error"]
    observed = check.get("observed", {})
    return DETAILS[name](observed)


def _database(observed: dict) -> str:
    return f"{observed.get('vendor', '?')} · {observed.get('latency_ms', '?')} ms"


def _redis(observed: dict) -> str:
    if not observed.get("configured"):
        return "not configured"
    if not observed.get("connected"):
        return f"unreachable: {observed.get('error', 'no answer')}"
    text = f"ping {observed.get('latency_ms')} ms"
    used = observed.get("used_memory_bytes")
    if used is not None:
        text += f" · {megabytes(used)} MB"
        if observed.get("max_memory_bytes"):
            text += f" of {megabytes(observed['max_memory_bytes'])} MB"
    return text


def _switch(observed: dict) -> str:
    caching = "on" if observed.get("enabled") else "off"
    return f"caching {caching} · {observed.get('source')} · generation {observed.get('generation')}"


def _breaker(observed: dict) -> str:
    if observed.get("state") == "closed":
        return "closed"
    return f"{observed.get('state')} · probe in {observed.get('seconds_until_probe')} s"


def _channel_layer(observed: dict) -> str:
    backend = str(observed.get("backend") or "none")
    return f"{backend}: {observed['error']}" if observed.get("error") else backend


def _evaluator(observed: dict) -> str:
    if not observed.get("enabled"):
        return "turned off (REDIS_MONITORING_ENABLED=false)"
    return f"held by {observed.get('holder')}"


def _notifications(observed: dict) -> str:
    failing = [c for c in observed.get("channels", []) if c["failing"]]
    if failing:
        return "; ".join(f"{c['channel']} failing: {c['last_error']}" for c in failing)
    if observed.get("overdue"):
        return f"{observed['overdue']} waiting over a minute: is a notification worker running?"
    channels = observed.get("channels", [])
    if not channels:
        return "nothing sent yet"
    return "; ".join(f"{c['channel']}: {c['last_status'] or 'waiting'}" for c in channels)


DETAILS = {
    "database": _database,
    "redis": _redis,
    "switch": _switch,
    "breaker": _breaker,
    "channel_layer": _channel_layer,
    "evaluator": _evaluator,
    "notifications": _notifications,
}


def megabytes(n: int) -> str:
    return f"{n / 1048576:.1f}"


@functools.cache
def runbook_html() -> str:
    """docs/ROLLOUT.md as HTML, each heading with the anchor the rules' links point at."""
    text = (settings.BASE_DIR / "docs" / "ROLLOUT.md").read_text()
    return markdown.markdown(text, extensions=["toc", "fenced_code", "tables"])


# The Review page's periods: (name, label).
REVIEW_PERIODS = [("24h", "24 h"), ("7d", "7 days"), ("30d", "30 days")]


def review(period: str) -> dict:
    report = review_figures.report(period)
    days = [{**day, "from": parse_datetime(day["from"])} for day in report["hit_rate"]["daily"]]
    return {
        "report": report,
        "periods": REVIEW_PERIODS,
        "period_label": dict(REVIEW_PERIODS)[period],
        "period_from": parse_datetime(report["period"]["from"]),
        "period_to": parse_datetime(report["period"]["to"]),
        "days": days,
    }
