"""What the browser tests share: opsdash served by daphne in a subprocess (HTTP, websockets and
asgi.py's background threads, configured through its environment as in production), the
people who use it, and Twilio deliveries signed the way Twilio signs them.

The served process uses this run's test database and redis-servers of the test's own, never
the shared Redis in REDIS_URL. Tests that use it are transactional (the served process sees
only committed rows)."""

import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.core.management import call_command

from tests.conftest import missing_service
from tests.leads.twilio_support import FORM, SMS_PATH, expected_signature, sms
from tests.monitoring.metrics_support import subprocess_environment
from tests.personas import session_id
from tests.redis_servers import RedisServer, free_port, redis_server_binary

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says so: a skip, or with CI=true a failure
    expect = None

ROOT = Path(__file__).resolve().parents[2]
TWILIO_TOKEN = "twilio-e2e-auth-token-5c1d"
PASSWORD = "correct horse battery staple"
# Set in the test process only (see the browser fixture); a served process must not inherit it.
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
# Generous for a busy 2-core machine, and bounded: a page that never gets there fails.
LIVE_WITHIN_MS = 20_000
SHOWN_WITHIN_MS = 20_000

# The served app's environment: as in production (DEBUG off), but figures flushed and evaluated
# every second, so a test sees a change in seconds; no notification leaves the machine.
SERVED = {
    "DEBUG": "false",
    # Plain HTTP on the loopback, where production has a TLS-terminating proxy in front.
    "SECURE_SSL_REDIRECT": "false",
    "SESSION_COOKIE_SECURE": "false",
    "CSRF_COOKIE_SECURE": "false",
    "REDIS_ENABLED": "",
    "REDIS_EMBEDDED": "false",
    # A busy test machine can stall a Redis answer past the default 50 ms and open the breaker;
    # these tests are about the pages, not about that budget (bench/ measures it).
    "REDIS_SOCKET_TIMEOUT": "0.5",
    "REDIS_CONNECT_TIMEOUT": "0.5",
    "CHANNEL_REDIS_URL": "",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "METRICS_ENABLED": "true",
    "METRICS_FLUSH_SECONDS": "1",
    "REDIS_MONITORING_ENABLED": "true",
    "MONITORING_EVALUATE_SECONDS": "1",
    "MONITORING_LEASE_SECONDS": "3",
    "SWITCH_REFRESH_SECONDS": "0.5",
    "ALERT_REDIS_DOWN_FOR_SECONDS": "1",
    "MONITORING_TOKEN": "",
    "REDIS_ALERT_WEBHOOK_URL": "",
    "ALERT_EMAILS": "",
    "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    "WEBHOOK_VERIFY": "true",
    "LOG_LEVEL": "WARNING",
}


class Server:
    """`daphne opsdash.asgi:application` on a free loopback port, ended by its own PID."""

    START_TIMEOUT = 60

    def __init__(self, log_dir: Path, cache_redis: RedisServer, **environment: str) -> None:
        self.log_dir = log_dir
        self.cache_redis = cache_redis
        self.environment = environment
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        for _ in range(3):  # the free port may be taken before daphne binds it
            self.port = free_port()
            if self._start_once():
                return self
        raise RuntimeError(f"daphne did not start:\n{self.log_tail()}")

    def _start_once(self) -> bool:
        environment = subprocess_environment(
            **{
                **SERVED,
                "REDIS_URL": self.cache_redis.url,
                "PUBLIC_BASE_URL": self.url,
                # The sessions this process creates (session_cookie) are signed with it.
                "SECRET_KEY": settings.SECRET_KEY,
                # Its own: a call one server answered is never recorded by the next.
                "RECORD_SPOOL_DIR": str(self.log_dir / "record-spool"),
                **self.environment,
            }
        )
        environment.pop(ASYNC_UNSAFE, None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
                + ["opsdash.asgi:application"],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            if self._answers():
                return True
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daphne did not answer in {self.START_TIMEOUT} s:\n{self.log_tail()}")

    @property
    def log_path(self) -> Path:
        return self.log_dir / "daphne.log"

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/api/monitoring/health/live", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def post_sms(self, sid: str, body: str) -> int:
        """An inbound text from the recorded payload's caller, signed as Twilio signs it."""
        params = sms(MessageSid=sid, SmsSid=sid, SmsMessageSid=sid, Body=body)
        signature = expected_signature(TWILIO_TOKEN, self.url + SMS_PATH, params)
        request = urllib.request.Request(
            self.url + SMS_PATH,
            data=urlencode(params).encode(),
            headers={"Content-Type": FORM, "X-Twilio-Signature": signature},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status


def private_redis() -> RedisServer:
    if redis_server_binary() is None:
        missing_service("a redis-server binary")
    return RedisServer().start()


@contextmanager
def serving(log_dir: Path, django_db_blocker, **environment: str):
    """opsdash served against this run's database, caching in a private redis-server
    (`server.cache_redis`, which a test may stop and start again)."""
    cache_redis = private_redis()
    server = Server(log_dir, cache_redis, **environment)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        cache_redis.close()
        # Its flusher and evaluator write every second, also after the last test's flush:
        # none of that may reach the tests that run after these.
        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)


def sms_sid(n: int) -> str:
    return f"SM{n:032x}"


def session_cookie(user, url: str) -> dict:
    """A logged-in session for `user`, as the browser cookie the served app reads."""
    return {"name": "sessionid", "value": session_id(user), "url": url}


def wait_live(page) -> None:
    """The page's websocket is open (and pushes will reach it)."""
    body = page.locator("body")
    expect(body).to_have_attribute("data-live-state", "live", timeout=LIVE_WITHIN_MS)


# --- what a person sees on the pages, found by role and text ------------------------------


def switch_panel(page):
    return page.get_by_role("region", name="Redis caching")


def switch_state(page):
    """The panel's ON / OFF."""
    return switch_panel(page).get_by_text(re.compile(r"^(ON|OFF)$"))


def switch_fact(page, term: str):
    """The panel's value for `term` ("Source", "Generation", "Last change", "Reason"): the
    definition after that term (ARIA gives a definition no name of its own)."""
    term = switch_panel(page).get_by_role("term").filter(has_text=re.compile(f"^{term}$"))
    return term.locator("xpath=following-sibling::dd[1]")


def last_change_by(who: str) -> re.Pattern:
    """The panel's "Last change" text: who, and when to the second."""
    return re.compile(rf"^\s*{who}\s+at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\s*$")


def switch_badge(page):
    """The header's word on the switch, on every page."""
    return page.get_by_title("The REDIS_ENABLED switch")


def health_tile(page, label: str):
    return page.get_by_role("list", name="Health checks").get_by_role(
        "listitem", name=label, exact=True
    )


def active_alerts(page):
    return page.get_by_role("list", name="Active alerts")


def chart(page, title: str):
    return page.get_by_role("figure", name=title, exact=True)


def live_status(page):
    return page.get_by_role("banner").get_by_role("status")


def degraded_banner(page):
    return page.get_by_role("alert").filter(has_text="live updates degraded")
