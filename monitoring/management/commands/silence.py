import getpass
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from monitoring.alerts import silences
from monitoring.alerts.durations import parse_duration
from monitoring.models import Silence


class Command(BaseCommand):
    help = (
        "Silence an alert rule (or every rule) for a while, e.g. a maintenance window: its alerts "
        "still open and are recorded, but notify nobody and trigger no automatic rollback. "
        "`silence add --rule R | --all --reason ... (--for 2h | --end ISO) [--start ISO] "
        "[--weekly]`, `silence list`, `silence cancel ID`."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="create a silence")
        which = add.add_mutually_exclusive_group(required=True)
        which.add_argument("--rule", help="the rule to silence (see `silence list --rules`)")
        which.add_argument("--all", action="store_true", help="every rule")
        add.add_argument("--reason", required=True)
        add.add_argument("--owner", default="", help="who answers for it (default: you)")
        add.add_argument("--start", default="", help="ISO 8601 time (default: now)")
        until = add.add_mutually_exclusive_group(required=True)
        until.add_argument("--for", dest="length", help="how long: 30m, 2h, 1d, 1h30m")
        until.add_argument("--end", default="", help="ISO 8601 time")
        add.add_argument("--weekly", action="store_true", help="repeat the window every week")
        add.add_argument("--actor", default="", help="who (default: the OS user)")
        listing = actions.add_parser("list", help="silences in force or to come")
        listing.add_argument("--rules", action="store_true", help="the rule names instead")
        cancel = actions.add_parser("cancel", help="end a silence now")
        cancel.add_argument("id", type=int)
        cancel.add_argument("--actor", default="", help="who (default: the OS user)")

    def handle(self, *args, action: str, **options):
        getattr(self, f"_{action}")(**options)

    def _add(self, *, rule, all, reason, owner, start, length, end, weekly, actor, **_):
        actor = actor or f"{getpass.getuser()} (cli)"
        starts_at = _time(start, "--start") if start else timezone.now()
        ends_at = starts_at + _duration(length) if length else _time(end, "--end")
        try:
            silence = silences.create(
                rule="" if all else rule,
                reason=reason,
                owner=owner or actor,
                starts_at=starts_at,
                ends_at=ends_at,
                weekly=weekly,
                actor=actor,
            )
        except silences.Invalid as exc:
            raise CommandError(f"no silence created: {exc}") from exc
        self.stdout.write(
            self.style.SUCCESS(f"silence #{silence.pk}: {silences.describe(silence)}")
        )

    def _list(self, *, rules, **_):
        if rules:
            for name in silences.rule_names():
                self.stdout.write(name)
            return
        shown = silences.in_force_or_coming()
        if not shown:
            self.stdout.write("no silence in force or to come")
        now = timezone.now()
        for silence, start, end in shown:
            when = "in force" if start <= now else "from"
            self.stdout.write(
                f"#{silence.pk} {when} {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC: "
                f"{silences.describe(silence)}"
            )

    def _cancel(self, *, id, actor, **_):
        actor = actor or f"{getpass.getuser()} (cli)"
        try:
            silence = silences.cancel(id, actor=actor)
        except Silence.DoesNotExist:
            raise CommandError(f"no silence #{id}") from None
        self.stdout.write(
            self.style.SUCCESS(f"silence #{silence.pk} ended by {silence.cancelled_by}")
        )


def _time(text: str, option: str) -> datetime:
    moment = parse_datetime(text)
    if moment is None:
        raise CommandError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-12-05T02:00Z)")
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


def _duration(text: str):
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
