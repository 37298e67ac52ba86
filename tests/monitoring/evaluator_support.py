"""Helpers for the evaluator tests that run real processes against the test database: their
environment, a local stand-in for Slack's incoming webhook, and a bounded wait."""

import json
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.monitoring.test_switch import subprocess_environment


class SlackCatcher(ThreadingHTTPServer):
    """A local stand-in for Slack's incoming webhook: answers 200 "ok", keeps every POST."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        super().__init__(("127.0.0.1", 0), self.Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/T000/B000/XXXX"

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.server.posts.append({"path": self.path, "payload": json.loads(body)})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass


@contextmanager
def slack_catching():
    """A SlackCatcher answering on a thread of its own, shut down afterwards."""
    catcher = SlackCatcher()
    thread = threading.Thread(target=catcher.serve_forever, daemon=True)
    thread.start()
    try:
        yield catcher
    finally:
        catcher.shutdown()
        catcher.server_close()
        thread.join(10)


def evaluator_environment(**more: str) -> dict[str, str]:
    """The test database, a Redis that refuses connections with caching on (the Redis-down rule
    breaches), that rule firing at once, and no e-mail."""
    return {
        **subprocess_environment(),
        "REDIS_MONITORING_ENABLED": "true",
        "ALERT_REDIS_DOWN_FOR_SECONDS": "0",
        "ALERT_EMAILS": "",
        "REDIS_ALERT_WEBHOOK_URL": "",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        **more,
    }


def wait_for(check, seconds: float = 20.0, process: subprocess.Popen | None = None):
    """check()'s first truthy answer, asked every 50 ms for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(0.05)
    if process is not None:
        process.kill()
        _, err = process.communicate(timeout=10)
        pytest.fail(f"nothing after {seconds} s; the process said:\n{err}")
    pytest.fail(f"nothing after {seconds} s: {check}")
