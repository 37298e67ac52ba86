import time
from collections import defaultdict
from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandError
from django.db.models import F

from leads import services
from leads.management.progress import Progress
from leads.models import Lead, PhoneNumber
from monitoring.cache import gate, switch
from monitoring.cache.breaker import CLOSED


@dataclass
class Tally:
    loaded: int = 0
    already_warm: int = 0
    skipped: int = 0


class Command(BaseCommand):
    help = (
        "Load the call contexts of the most recently contacted leads into the cache (one per "
        "number of the lead's organization), so their next call finds them warm: after a "
        "deploy, a flush or turning caching on. Progress on stderr, a summary on stdout. Exit "
        "status 1 when caching is off or Redis is unreachable (nothing to warm)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--limit", type=int, default=1000, help="how many leads, hottest first (default 1000)"
        )

    def handle(self, *args, limit: int, **options):
        if limit < 1:
            raise CommandError("--limit must be at least 1")
        self._require_a_cache()
        leads = hottest_leads(limit)
        numbers = numbers_by_organization({org_id for _, org_id, _ in leads})
        started = time.monotonic()
        tally = Tally()
        progress = Progress(len(leads), self.stderr)
        for done, (_, org_id, phone) in enumerate(leads):
            for number in numbers.get(org_id, []):
                self._warm(number, phone, tally)
            if not numbers.get(org_id):
                tally.skipped += 1  # no number answers for its organization: no call can come
            if gate.breaker.state != CLOSED:
                progress.finish()
                raise CommandError(
                    f"Redis became unreachable at lead {done + 1} of {len(leads)} "
                    f"(loaded {tally.loaded}); run again once it is back"
                )
            progress.advance()
        progress.finish()
        seconds = time.monotonic() - started
        self.stdout.write(
            f"warmed the call contexts of {len(leads)} leads in {seconds:.1f} s: loaded "
            f"{tally.loaded}, already warm {tally.already_warm}, skipped {tally.skipped}"
        )

    def _require_a_cache(self) -> None:
        state = gate.switch.refresh()
        if not state.enabled:
            why = (
                "caching is switched off (`manage.py redis_switch on` turns it on)"
                if state.can_flip
                else switch.why_unavailable()
            )
            raise CommandError(f"nothing to warm: {why}")
        server = gate.sample_server()
        if not server["connected"]:
            raise CommandError(
                f"nothing to warm: Redis is unreachable ({server.get('error', 'no answer')})"
            )

    def _warm(self, number: str, phone: str, tally: Tally) -> None:
        before = gate.stats.snapshot().get("ctx", {})
        services.call_context(number, phone)
        after = gate.stats.snapshot()["ctx"]
        if after["hits"] > before.get("hits", 0):
            tally.already_warm += 1
        elif after["stores"] > before.get("stores", 0):
            tally.loaded += 1
        else:  # a Redis fault, or a write raced the load (the store was refused)
            tally.skipped += 1


def hottest_leads(limit: int) -> list[tuple[int, int, str]]:
    """(id, organization id, phone) of the `limit` most recently contacted leads; leads never
    contacted come last."""
    return list(
        Lead.objects.order_by(F("last_contact_at").desc(nulls_last=True), "-id").values_list(
            "id", "organization_id", "phone"
        )[:limit]
    )


def numbers_by_organization(organization_ids: set[int]) -> dict[int, list[str]]:
    numbers: dict[int, list[str]] = defaultdict(list)
    rows = PhoneNumber.objects.filter(organization_id__in=organization_ids).order_by("e164")
    for org_id, number in rows.values_list("organization_id", "e164"):
        numbers[org_id].append(number)
    return numbers
