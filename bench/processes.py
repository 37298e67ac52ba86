"""Child processes a load scenario runs: the app under daphne, the delay proxy, the load client.
Each is started with the venv's Python from the repository root and ended by its own PID."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE_PATH = "/webhooks/elevenlabs/conversation-initiation"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def daphne(env: dict[str, str], application: str = "opsdash.asgi:application", stderr=None):
    """`application` under daphne on a free loopback port: yields (port, pid) once it answers,
    then stops it by its PID. Its access log (daphne's default, on stdout) goes to /dev/null,
    stderr to `stderr` (a binary file) or a temporary file."""
    port = free_port()
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    with tempfile.TemporaryFile() if stderr is None else nullcontext(stderr) as log:
        child = subprocess.Popen(
            [*command, application],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            wait_until_answers(port, child, log)
            yield port, child.pid
        finally:
            stop(child)


def wait_until_answers(port: int, child: subprocess.Popen, log, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"daphne exited ({child.returncode}):\n{log.read().decode()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", PROBE_PATH)
            if conn.getresponse().status == 405:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"daphne did not answer on port {port} within {timeout} s")


def stop(child: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM (daphne then drains its deferred writes for up to 5 s at exit), SIGKILL if stuck."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def delay_proxy(target: str, delay_ms: float, summary: dict):
    """The delay proxy on a free port: yields the port; fills `summary` with its hold times."""
    port = free_port()
    command = [sys.executable, "-m", "bench.delay_proxy", "--port", str(port)]
    child = subprocess.Popen(
        [*command, "--target", target, "--delay-ms", str(delay_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the delay proxy did not start")
        yield port, child.pid
    finally:
        stop(child)
        summary.update(json.loads(child.stdout.read() or "{}"))


def run_load(plan: dict) -> dict:
    """The load client in its own process; returns its JSON summary."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        cwd=ROOT,
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        check=False,
        timeout=plan["warmup"] + plan["duration"] + 60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load client failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def source_state() -> dict:
    """The commit the app was run from, and the tracked app files changed since (other work may
    be in progress in the tree a run measures)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout

    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "changed": sorted(p[3:] for p in changed if not p[3:].startswith(("bench/", "tests/"))),
    }
