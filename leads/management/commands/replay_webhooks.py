from django.core.management.base import BaseCommand, CommandError

from leads.models import WebhookEvent
from leads.webhooks import deliveries, handlers


class Command(BaseCommand):
    help = (
        "Process again the webhook deliveries whose processing failed (idempotent: a delivery "
        "already processed is never run twice). Exit status 1 if any still fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("--id", type=int, action="append", dest="ids", help="only this event")
        parser.add_argument("--provider", choices=WebhookEvent.Provider.values)
        parser.add_argument("--limit", type=int, default=1000)
        parser.add_argument("--dry-run", action="store_true", help="list, do not process")

    def handle(self, *args, ids, provider, limit, dry_run, **options):
        failed = WebhookEvent.objects.filter(status=WebhookEvent.Status.FAILED).order_by("id")
        if ids:
            failed = failed.filter(pk__in=ids)
        if provider:
            failed = failed.filter(provider=provider)
        events = list(failed[:limit])
        self.stdout.write(f"{len(events)} failed deliver{'y' if len(events) == 1 else 'ies'}")
        still_failing = 0
        for event in events:
            label = f"#{event.pk} {event.provider} {event.event_type} {event.idempotency_key}"
            if dry_run:
                last_line = event.error.splitlines()[-1] if event.error else ""
                self.stdout.write(f"  would replay {label}: {last_line}")
                continue
            outcome = deliveries.process(event, handlers.for_event(event))
            if outcome.failed:
                still_failing += 1
                error = outcome.event.error
                self.stdout.write(self.style.ERROR(f"  {label}: failed again: {error}"))
            else:
                self.stdout.write(self.style.SUCCESS(f"  {label}: {outcome.event.status}"))
        if still_failing:
            noun = "delivery still fails" if still_failing == 1 else "deliveries still fail"
            raise CommandError(f"{still_failing} {noun}")
