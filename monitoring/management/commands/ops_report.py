import json

from django.core.management.base import BaseCommand, CommandError

from monitoring.metrics import review

VERDICTS = {True: "MET", False: "MISSED", None: "NOT JUDGED"}


class Command(BaseCommand):
    help = (
        "The weekly review, from the metrics history: hit rate and its trend, p50/p95 per "
        "route group, error rate, call initiations answered with the fallback, Redis memory "
        "growth and when it reaches maxmemory, uptime of Redis and of the app, and the "
        "runbook's success criteria each marked met or missed with its figure."
    )

    def add_arguments(self, parser):
        parser.add_argument("--period", default="7d", help="hours or days back: 24h, 7d, 30d")
        parser.add_argument("--json", action="store_true", help="print one JSON document")

    def handle(self, *args, **options):
        try:
            body = review.report(options["period"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(body, indent=2))
            return
        for line in text_lines(body):
            self.stdout.write(line)


def _percent(fraction, places=1) -> str:
    return "—" if fraction is None else f"{fraction * 100:.{places}f} %"


def _ms(value) -> str:
    return "—" if value is None else f"{value:g} ms"


def text_lines(body: dict) -> list[str]:
    period, hit = body["period"], body["hit_rate"]
    change = hit["trend"]["change"]
    trend = "—" if change is None else f"{change * 100:+.1f} points (second half vs first)"
    lines = [
        f"Review of {period['name']}: {period['from']} to {period['to']}",
        f"Hit rate: {_percent(hit['value'])} of {hit['lookups']} lookups; trend {trend}",
        "Latency per route group (p50 / p95):",
    ]
    for name, group in body["route_groups"].items():
        lines.append(
            f"  {name}: {_ms(group['p50_ms'])} / {_ms(group['p95_ms'])} "
            f"({group['requests']} requests)"
        )
    errors, initiations = body["error_rate"], body["initiations"]
    memory, uptime = body["redis_memory"], body["uptime"]
    lines += [
        f"Error rate (traffic): {_percent(errors['error_rate'], 2)} "
        f"({errors['errors']} of {errors['requests']})",
        f"Call initiations answered with the fallback: {initiations['fallback']} "
        f"of {initiations['requests']}",
        f"Redis memory: {memory['projection']}",
        f"Uptime: app {_percent(uptime['app']['value'], 2)}, "
        f"Redis {_percent(uptime['redis']['value'], 2)}",
        "Success criteria:",
    ]
    for criterion in body["criteria"]:
        lines.append(
            f"  [{VERDICTS[criterion['met']]}] {criterion['label']}: {criterion['figure']}"
        )
    return lines
