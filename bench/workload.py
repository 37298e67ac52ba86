"""What the mixed-load scenarios (hitrate, toggle, outage) share: the served app (daphne, in a
subprocess, with its SQL statements counted by bench.served), the load client (bench.loadgen
with a mixed plan, its own process), the app's own metric windows, the monitoring API, the
switch flipped from the command line, and the checks for lost writes."""

import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from bench import processes
from bench.loadgen import CHECKED, FALLBACK, STALE_NAME, STALE_SMS, VERIFY
from leads.models import Conversation, Message
from monitoring.models import MetricWindow, SwitchAudit

INITIATION_SECRET = "bench-secret"
ELEVENLABS_SECRET = "bench-elevenlabs-secret"
TWILIO_TOKEN = "bench-twilio-token"
PUBLIC_BASE_URL = "https://opsdash.bench.invalid"  # what Twilio "called": the signed URL's base
WEBHOOK_GROUPS = ("webhook_initiation", "webhook_sms", "webhook_post_call")
# Log lines every run has: the start-up line, and the 405 of the readiness probe (a GET).
RULE = "redis_connection_lost"  # the alert the outage scenarios watch
EXPECTED_LOG = ("opsdash started:", "Method Not Allowed: /webhooks/elevenlabs/conversation-init")


# --- the served app -------------------------------------------------------------------------


@dataclass
class App:
    port: int
    pid: int
    counts_file: str
    token: str
    env: dict[str, str]
    log_path: str
    log_text: str = ""  # the whole log, once the app has stopped (its exit included)

    @property
    def process(self) -> str:
        """The process name in the app's metric windows."""
        return f"{socket.gethostname()}:{self.pid}"


def app_environment(redis_url: str, token: str, counts_file: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "DEBUG": "false",
        # Plain HTTP on loopback stands for TLS ended at a proxy: no redirect to https.
        "SECURE_SSL_REDIRECT": "false",
        "SECRET_KEY": f"bench-{uuid.uuid4().hex}",
        "ELEVENLABS_INITIATION_SECRET": INITIATION_SECRET,
        "ELEVENLABS_WEBHOOK_SECRET": ELEVENLABS_SECRET,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "MONITORING_TOKEN": token,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "BENCH_SQL_COUNTS": counts_file,
    }


@contextmanager
def served(args, redis_url: str | None = None):
    """The app under daphne (bench.served: the app plus its SQL statement counts) on a free
    loopback port; yields an App once it answers, then stops it by its PID. Its stderr (the
    app's log at WARNING and above) is in `App.log_text` once it has stopped."""
    token = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="opsdash-bench-") as directory:
        counts, log = f"{directory}/sql.json", f"{directory}/daphne.log"
        env = app_environment(redis_url or settings.REDIS_URL, token, counts)
        if args.redis_socket_timeout:
            env["REDIS_SOCKET_TIMEOUT"] = str(args.redis_socket_timeout)
        with open(log, "w+b") as stderr:
            app = None
            try:
                with processes.daphne(env, "bench.served:application", stderr) as (port, pid):
                    app = App(port, pid, counts, token, env, log)
                    yield app
            finally:
                if app is not None:  # the log once the app has stopped, its exit included
                    app.log_text = Path(log).read_text(errors="replace")


def log_summary(text: str, t0: float) -> dict[str, dict]:
    """The app's log lines (WARNING and above), by level, logger and the start of the message:
    how many, and the first one's time in seconds since `t0`. Lines outside the log format
    (a traceback's last line, "Exception in thread ...") are counted too, without a time."""
    kinds: dict[str, dict] = {}
    for line in text.splitlines():
        kind, at = _log_kind(line)
        if kind is None:
            continue
        seen = kinds.setdefault(kind, {"count": 0, "first_s": None})
        seen["count"] += 1
        if seen["first_s"] is None and at is not None:
            seen["first_s"] = round(at - t0, 2)
    return kinds


def _log_kind(line: str) -> tuple[str | None, float | None]:
    parts = line.split(" ", 4)
    try:
        at = datetime.strptime(f"{parts[0]} {parts[1]}", "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except (ValueError, IndexError):
        if not line or line[0].isspace() or line.startswith("Traceback"):
            return None, None
        return f"OTHER {line[:80]}", None
    if len(parts) < 5 or parts[2] not in ("WARNING", "ERROR", "CRITICAL"):
        return None, None
    if parts[4].startswith(EXPECTED_LOG):
        return None, None
    return f"{parts[2]} {parts[3]} {parts[4][:60]}", at


def socket_timeout(value: float | None) -> str:
    """The app's Redis socket timeout in this run, for the report's first line."""
    if value:
        return f"REDIS_SOCKET_TIMEOUT={value}"
    return f"REDIS_SOCKET_TIMEOUT default ({settings.REDIS_SOCKET_TIMEOUT})"


def print_log(kinds: dict[str, dict]) -> None:
    print(f"app log (WARNING and above): {'none' if not kinds else ''}")
    for kind, seen in kinds.items():
        first = "-" if seen["first_s"] is None else f"{seen['first_s']:+.2f} s"
        print(f"  {seen['count']:>5} x (first at {first}) {kind}")


def switch_audit(since: float) -> dict[str, int]:
    """Switch audit rows written since `since`, by action (flips, and generation bumps)."""
    rows = SwitchAudit.objects.filter(at__gte=utc(since)).values_list("action", flat=True)
    counts: dict[str, int] = {}
    for action in rows:
        counts[action] = counts.get(action, 0) + 1
    return counts


def bump_reasons(since: float, phases: list[dict]) -> dict[str, dict[str, int]]:
    """The switch audit rows since `since`, by the phase they happened in (from its action to
    its end) and by action and the first clause of their reason (run ids and generation
    numbers left out), so a report can explain every generation bump."""
    rows = SwitchAudit.objects.filter(at__gte=utc(since)).values_list("at", "action", "reason")
    explained: dict[str, dict[str, int]] = {}
    for at, action, reason in rows:
        moment = at.timestamp()
        phase = next((p["name"] for p in phases if p["action_at"] <= moment < p["end"]), "warm-up")
        clause = re.sub(r"\(run id [^)]*\)|generation \d+", "", reason.split(":")[0])
        key = f"{action}: {' '.join(clause.split())}"
        counts = explained.setdefault(phase, {})
        counts[key] = counts.get(key, 0) + 1
    return explained


def sql_counts(app: App) -> dict:
    """The app's SQL statements so far, by who ran them (see bench.served)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return json.loads(Path(app.counts_file).read_text())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def api_get(app: App, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {app.token}"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return json.loads(body)


# --- the load client ------------------------------------------------------------------------


class LoadRun:
    """bench.loadgen in its own process, with a mixed plan: started with it, stopped by a file."""

    def __init__(self, app: App, plan: dict) -> None:
        self.directory = tempfile.mkdtemp(prefix="opsdash-bench-load-")
        self.plan = {
            "mode": "mixed",
            "host": "127.0.0.1",
            "port": app.port,
            "initiation_header": settings.ELEVENLABS_INITIATION_HEADER,
            "initiation_secret": INITIATION_SECRET,
            "elevenlabs_secret": ELEVENLABS_SECRET,
            "twilio_token": TWILIO_TOKEN,
            "public_base_url": PUBLIC_BASE_URL,
            "stop_file": f"{self.directory}/stop",
            "records_file": f"{self.directory}/records.json",
            "tag": uuid.uuid4().hex[:8],
            **plan,
        }
        self.child: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> "LoadRun":
        self.child = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
            cwd=processes.ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.child.stdin.write(json.dumps(self.plan))
        self.child.stdin.close()
        self.started = json.loads(self.child.stdout.readline())["started"]
        return self

    def stop(self) -> tuple[dict, list[list]]:
        """Ask it to stop; wait for its summary and its records."""
        Path(self.plan["stop_file"]).touch()
        out = self.child.stdout.read()
        if self.child.wait(timeout=120) != 0:
            raise RuntimeError(f"the load client failed ({self.child.returncode})")
        records = json.loads(Path(self.plan["records_file"]).read_text())
        shutil.rmtree(self.directory, ignore_errors=True)
        return json.loads(out.strip().splitlines()[-1]), records


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


# --- figures from the load's records --------------------------------------------------------


def between(records: list[list], start: float, end: float, kinds=(0, 1, 2)) -> list[list]:
    return [r for r in records if start <= r[0] < end and r[2] in kinds]


def latency(records: list[list]) -> dict:
    """Count, non-2xx, p50 and p99 (ms) of some requests' records."""
    ms = sorted(r[1] for r in records)
    if len(ms) < 2:
        return {"requests": len(ms), "non_2xx": _non_2xx(records), "p50_ms": None, "p99_ms": None}
    centiles = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "requests": len(ms),
        "non_2xx": _non_2xx(records),
        "p50_ms": round(centiles[49], 2),
        "p99_ms": round(centiles[98], 2),
    }


def phase_stats(records: list[list]) -> dict:
    """What the load saw in some period: requests, non-2xx answers (connection errors
    included), latency of initiations and of writes, stale answers, fallbacks."""
    writes = [r for r in records if r[2] != 0]
    return {
        "requests": len(records),
        "non_2xx": _non_2xx(records),
        "initiation": latency([r for r in records if r[2] == 0]),
        "write": latency(writes),
        "stale": flagged(records, STALE_SMS | STALE_NAME),
        "fallbacks": flagged(records, FALLBACK),
        "verify_reads": flagged(records, VERIFY),
        "checked": flagged(records, CHECKED),
    }


PHASE_COLUMNS = [
    ("requests", 8, lambda s: s["requests"]),
    ("non2xx", 6, lambda s: s["non_2xx"]),
    ("init p50", 8, lambda s: _ms(s["initiation"]["p50_ms"])),
    ("init p99", 8, lambda s: _ms(s["initiation"]["p99_ms"])),
    ("writes", 6, lambda s: s["write"]["requests"]),
    ("wr p50", 7, lambda s: _ms(s["write"]["p50_ms"])),
    ("wr p99", 7, lambda s: _ms(s["write"]["p99_ms"])),
    ("verify", 6, lambda s: s["verify_reads"]),
    ("checked", 7, lambda s: s["checked"]),
    ("stale", 5, lambda s: s["stale"]),
    ("fallbk", 6, lambda s: s["fallbacks"]),
]


def phase_table(rows: dict[str, dict], label_width: int = 28) -> str:
    head = f"{'':<{label_width}}" + "".join(f" {h:>{w}}" for h, w, _ in PHASE_COLUMNS)
    lines = [head]
    for name, stats in rows.items():
        cells = "".join(f" {str(figure(stats)):>{w}}" for _, w, figure in PHASE_COLUMNS)
        lines.append(f"{name:<{label_width}}{cells}")
    return "\n".join(lines)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _non_2xx(records: list[list]) -> int:
    return sum(1 for r in records if not 200 <= r[3] < 300)


def flagged(records: list[list], flag: int) -> int:
    return sum(1 for r in records if r[4] & flag)


# --- the app's own metric windows ----------------------------------------------------------


def windows(app: App, start: float, end: float) -> list[dict]:
    """The app's windows (written every METRICS_FLUSH_SECONDS) that ended in [start, end)."""
    rows = MetricWindow.objects.filter(
        process=app.process, ended_at__gte=utc(start), ended_at__lt=utc(end)
    ).order_by("ended_at")
    return [
        {"started": row.started_at.timestamp(), "ended": row.ended_at.timestamp(), **row.data}
        for row in rows
    ]


def breaker_changes(rows: list[dict], t0: float) -> list[str]:
    """The circuit breaker's transitions recorded in the app's windows, since `t0`."""
    changes = []
    for row in rows:
        for at, old, new in row.get("breaker", {}).get("changes", []):
            changes.append((at, f"{at - t0:+.2f} s {old} -> {new}"))
    return [text for _, text in sorted(changes)]


def utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, tz=UTC)


def cache_sums(rows: list[dict], namespace: str | None = None) -> dict:
    """Hits and misses summed over windows, of one namespace or all."""
    hits = misses = 0
    for row in rows:
        for name, ns in row.get("cache", {}).items():
            if namespace is None or name == namespace:
                hits, misses = hits + ns.get("hits", 0), misses + ns.get("misses", 0)
    return {"hits": hits, "misses": misses, "hit_rate": ratio(hits, hits + misses)}


def request_sums(rows: list[dict], groups=WEBHOOK_GROUPS) -> dict:
    """Requests and their request-path SQL statements, summed over windows and groups."""
    count = sql = 0
    for row in rows:
        for name, group in row.get("requests", {}).items():
            if name in groups:
                count, sql = count + group.get("count", 0), sql + group.get("sql", 0)
    return {"requests": count, "sql": sql, "sql_per_1000": ratio(1000 * sql, count, 1)}


def ratio(part: float, whole: float, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


# --- the switch, from the command line ------------------------------------------------------


def switch_cli(app: App, action: str) -> dict:
    """`manage.py redis_switch <action> --reason bench` against the bench database, configured as
    the served app is; returns when it was run and how long it took."""
    command = ["manage.py", "redis_switch", action, "--reason", "bench", "--actor", "bench"]
    env = {**app.env, "LOG_LEVEL": "ERROR"}
    env.pop("BENCH_SQL_COUNTS")
    started = time.time()
    done = subprocess.run(
        [sys.executable, *command], cwd=processes.ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"redis_switch {action} failed:\n{done.stdout}{done.stderr}")
    return {"action": action, "started": started, "seconds": round(time.time() - started, 2)}


# --- writes that must be there --------------------------------------------------------------


def lost_writes(summary: dict) -> dict:
    """Every acknowledged text must be a stored message (by MessageSid), every acknowledged
    post-call a completed conversation (by conversation_id)."""
    texts, calls = summary["written"]["sms"], summary["written"]["post"]
    stored_texts = Message.objects.filter(provider_message_id__in=texts).count()
    completed = Conversation.objects.filter(
        provider_id__in=calls, status=Conversation.Status.COMPLETED
    ).count()
    return {
        "texts_acknowledged": len(texts),
        "texts_missing": len(texts) - stored_texts,
        "post_calls_acknowledged": len(calls),
        "post_calls_missing": len(calls) - completed,
        "lost": len(texts) - stored_texts + len(calls) - completed,
    }


def initiations_recorded(tag: str) -> int:
    """Calls opened by the deferred write of the load's initiations (call SIDs CA<tag>...)."""
    return Conversation.objects.filter(call_sid__startswith=f"CA{tag}").count()


def wait_for_deferred(tag: str, quiet: float = 2.0, limit: float = 30.0) -> int:
    """Wait until the deferred writer has stopped adding the load's calls (or `limit`)."""
    deadline, last, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = initiations_recorded(tag)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.25)
    return last


class AlertPoller(threading.Thread):
    """Polls the alert API; keeps each redis_connection_lost alert's timestamps and when the
    API was first seen to show it firing and resolved."""

    def __init__(self, app: App) -> None:
        super().__init__(name="bench-alert-poller", daemon=True)
        self.app = app
        self.seen: dict[int, dict] = {}
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(0.5):
            try:
                body = api_get(self.app, "/api/monitoring/alerts?state=all&limit=20")
            except (OSError, RuntimeError):
                continue
            for alert in body["alerts"]:
                if alert["rule"] == RULE:
                    self.note(alert, time.time())

    def note(self, alert: dict, now: float) -> None:
        entry = self.seen.setdefault(alert["id"], {})
        for field in ("started_at", "fired_at", "resolved_at"):
            entry[field] = alert[field]
        if alert["state"] in ("firing", "resolved"):
            entry.setdefault(f"seen_{alert['state']}", now)

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)


# --- figures --------------------------------------------------------------------------------


def under_load(app: App, plan: dict, warmup: float, act) -> dict:
    """The mixed load on `app` with the alert API watched; `act()` runs once the warm-up is over
    and returns what its phases were ({"phases": [...], ...}); then the load's records, the
    recorded initiations, the alerts seen, the breaker's changes and the app's log."""
    poller = AlertPoller(app)
    poller.start()
    load = LoadRun(app, plan).start()
    sleep_until(load.started + warmup)
    acted = act()
    summary, records = load.stop()
    recorded = wait_for_deferred(load.plan["tag"])
    poller.stop()
    time.sleep(settings.METRICS_FLUSH_SECONDS + 1)  # the last window is written
    rows = windows(app, load.started, time.time())
    return {
        "t0": load.started,
        "summary": summary,
        "records": records,
        **acted,
        "alerts": poller.seen,
        "breaker": breaker_changes(rows, load.started),
        "recorded": recorded,
        "app_log": log_summary(app.log_text, load.started),
    }
