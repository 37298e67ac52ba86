from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from monitoring.cache.diagnostics import (
    CheckResult,
    check_connection,
    describe_memory,
    describe_topology,
)


class Command(BaseCommand):
    help = (
        "Check the connection to the cache Redis (REDIS_URL, TLS included): latency, server "
        "version, memory, and a SET/GET/DEL round trip on a throwaway key. Exit status 0 when "
        "all works; 1 with the cause named (wrong password, TLS mismatch, connection refused, "
        "timeout, unknown host, no REDIS_URL, ...) when it does not. The password is never shown."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--url",
            default=None,
            help="check this URL instead of REDIS_URL (e.g. before configuring it)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="seconds to wait (default: REDIS_CONNECT_TIMEOUT and REDIS_SOCKET_TIMEOUT, "
            "what the app waits)",
        )
        parser.add_argument("--pings", type=int, default=5, help="PINGs to time (default 5)")

    def handle(self, *args, url: str | None, timeout: float | None, pings: int, **options):
        if timeout is not None and timeout <= 0:
            raise CommandError("--timeout must be a positive number of seconds")
        result = check_connection(url or settings.REDIS_URL, timeout=timeout, pings=pings)
        if result.url:
            self._line("Redis", f"{result.url} ({result.transport})")
        self._line(
            "timeouts",
            f"connect {result.connect_timeout:g} s, read {result.socket_timeout:g} s",
        )
        for label, text in describe_topology(result.topology) if result.topology else ():
            self._line(label, text)
        if not result.ok:
            raise CommandError(result.diagnosis)
        self._report(result)
        self.stdout.write(self.style.SUCCESS("Redis works."))

    def _report(self, result: CheckResult) -> None:
        self._line("connected", f"in {result.connect_ms:.2f} ms")
        self._line("latency", f"{result.latency_ms:.2f} ms (median of {result.pings} PINGs)")
        if result.server:
            self._line("server", f"Redis {result.server['version']}")
            self._line("memory", describe_memory(result.server))
        else:
            self._line("server", result.server_note)
        self._line(
            "round trip",
            f"SET, GET, DEL of {result.round_trip_key} ok in {result.round_trip_ms:.2f} ms",
        )

    def _line(self, label: str, text: str) -> None:
        self.stdout.write(f"{label + ':':<12} {text}")
