import getpass

from django.core.management.base import BaseCommand, CommandError

from monitoring.cache import controls, switch


class Command(BaseCommand):
    help = (
        "Show or flip the REDIS_ENABLED runtime switch, or flush the cache (bump the generation), "
        "for when the dashboard is unreachable. Exit status 1 when the switch cannot be flipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "on", "off", "flush"])
        parser.add_argument("--reason", default="", help="why (required for on, off and flush)")
        parser.add_argument("--actor", default="", help="who (default: the OS user)")

    def handle(self, *args, action: str, reason: str, actor: str, **options):
        if action == "status":
            self._print(switch.read_state())
            return
        if not reason.strip():
            raise CommandError("--reason is required: say why you are flipping the switch")
        actor = actor or f"{getpass.getuser()} (cli)"
        try:
            if action == "flush":
                state = controls.flush(actor=actor, reason=reason, source="cli")
            else:
                state = controls.flip(action == "on", actor=actor, reason=reason, source="cli")
        except controls.Refused as exc:
            what = "flush the cache" if action == "flush" else f"switch caching {action}"
            raise CommandError(f"cannot {what}: {exc}") from exc
        done = (
            f"cache flushed: generation {state.generation}"
            if action == "flush"
            else (f"caching is now {'on' if state.enabled else 'off'}")
        )
        self.stdout.write(self.style.SUCCESS(done))
        self._print(state)

    def _print(self, state: switch.SwitchState) -> None:
        labels = controls.SOURCE_LABELS
        when = state.changed_at.isoformat(timespec="seconds") if state.changed_at else "never"
        self.stdout.write(f"caching:     {'on' if state.enabled else 'off'}")
        self.stdout.write(f"source:      {labels[state.source]}")
        self.stdout.write(f"stored:      {'on' if state.stored_enabled else 'off'}")
        self.stdout.write(f"generation:  {state.generation}")
        self.stdout.write(
            f"last change: {when} by {state.changed_by or '-'} ({state.reason or '-'})"
        )
