import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from monitoring import validation
from monitoring.redaction import masked_url

STATUS_LABELS = {
    validation.PASS: "PASS",
    validation.WARN: "WARN",
    validation.FAIL: "FAIL",
    validation.SKIP: "SKIP",
}


class Command(BaseCommand):
    help = (
        "Production-readiness suite for the cache: infrastructure (connection, TLS, latency, "
        "memory policy), function (a real call context cached and invalidated on write), "
        "performance (cached vs database reads), resilience (the breaker against an "
        "unreachable Redis) and monitoring (evaluator alive, notification channels). Run it "
        "against the running deployment. It makes a scratch organization and lead, and deletes "
        "them at the end; it flips the switch only with --allow-switch-flip. Exit status 0 "
        "when no check failed, 1 otherwise."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON document")
        parser.add_argument(
            "--allow-switch-flip",
            action="store_true",
            help="run the generation check: flips caching off and on (audited), which empties "
            "the cache for every process",
        )
        parser.add_argument(
            "--samples", type=int, default=50, help="reads timed per path (default 50)"
        )
        parser.add_argument(
            "--max-latency-ms",
            type=float,
            default=10.0,
            help="median PING above this fails (default 10)",
        )
        parser.add_argument(
            "--min-speedup",
            type=float,
            default=3.0,
            help="cached reads must be this many times faster than the database (default 3)",
        )
        parser.add_argument(
            "--skip",
            action="append",
            default=[],
            metavar="CHECK",
            help="skip this check (repeatable), e.g. --skip evaluator before the app runs",
        )

    def handle(self, *args, **options):
        validation.discover()
        checks = validation.registry.checks()
        unknown = sorted(set(options["skip"]) - {check.name for check in checks})
        if unknown:
            known = ", ".join(check.name for check in checks)
            raise CommandError(f"unknown check {', '.join(unknown)}; the checks are: {known}")
        if options["samples"] < 1:
            raise CommandError("--samples must be at least 1")
        context = validation.ValidationContext(
            options=validation.Options(
                allow_switch_flip=options["allow_switch_flip"],
                samples=options["samples"],
                max_latency_ms=options["max_latency_ms"],
                min_speedup=options["min_speedup"],
            )
        )
        as_json = options["json"]
        if not as_json:
            self.stdout.write(f"Validating {self._target()}")
        progress = self._ignore if as_json else self._print_result
        report = validation.run_checks(context, checks, options["skip"], on_result=progress)
        if as_json:
            self.stdout.write(json.dumps({"redis": self._target(), **report.as_dict()}, indent=2))
        else:
            self._print_summary(report)
        if not report.ready:
            raise CommandError(report.verdict)

    def _target(self) -> str:
        return masked_url(settings.REDIS_URL) if settings.REDIS_URL else "(no REDIS_URL)"

    def _ignore(self, result: validation.Result) -> None:
        pass

    def _print_result(self, result: validation.Result) -> None:
        label = STATUS_LABELS[result.status]
        style = {
            validation.PASS: self.style.SUCCESS,
            validation.WARN: self.style.WARNING,
            validation.FAIL: self.style.ERROR,
        }.get(result.status, str)
        self.stdout.write(
            f"{style(label)}  {result.category:<14} {result.name:<22} {result.detail} "
            f"({result.duration_ms:.0f} ms)"
        )

    def _print_summary(self, report: validation.Report) -> None:
        counts = report.as_dict()["counts"]
        tally = ", ".join(f"{counts[status]} {status}" for status in STATUS_LABELS)
        self.stdout.write(f"score: {report.score:.0%} ({tally})")
        if report.warnings:
            self.stdout.write(f"warnings: {', '.join(report.warnings)}")
        style = self.style.SUCCESS if report.ready else self.style.ERROR
        self.stdout.write(style(f"verdict: {report.verdict}"))
