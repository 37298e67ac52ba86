import random
import signal
import threading
from collections import Counter
from contextlib import contextmanager

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from leads.demo import data, seed, traffic
from leads.management.progress import Progress


class Command(BaseCommand):
    help = (
        'A demo: `demo seed` creates the organization "Demo Bikes" with a number, business '
        "hours and leads with history (idempotent: run it again and nothing doubles). "
        "`demo traffic --url http://127.0.0.1:8000 --rate 5 [--duration 60]` sends signed "
        "webhook traffic (calls and texts from repeat and new callers) to the running app "
        "until Ctrl-C or --duration, printing the answers by endpoint and status "
        '("sms 200:30" is 30 answers 200). Exit status 1 when the app is unreachable or '
        "refuses the signatures, or the webhook secrets are not set."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{seed,traffic}")
        seeding = actions.add_parser("seed", help="create the demo organization and its leads")
        seeding.add_argument("--leads", type=int, default=200, help="how many leads (default 200)")
        sending = actions.add_parser("traffic", help="send signed webhook traffic to the app")
        sending.add_argument("--url", default="http://127.0.0.1:8000", help="the app's base URL")
        sending.add_argument(
            "--rate", type=float, default=5.0, help="deliveries a second (default 5)"
        )
        sending.add_argument(
            "--duration", type=float, default=None, help="seconds (default: until Ctrl-C)"
        )
        sending.add_argument(
            "--leads", type=int, default=200, help="how many seeded leads call (default 200)"
        )
        sending.add_argument(
            "--report-every", type=float, default=10.0, help="seconds between progress lines"
        )
        sending.add_argument(
            "--timeout", type=float, default=5.0, help="seconds to wait for each answer"
        )
        sending.add_argument("--seed", type=int, default=None, help="random seed (repeatable)")

    def handle(self, *args, action: str, **options):
        if not 0 <= options["leads"] <= data.MAX_LEADS:
            raise CommandError(f"--leads must be between 0 and {data.MAX_LEADS}")
        if action == "seed":
            self._seed(options["leads"])
        else:
            self._traffic(options)

    # --- seed -----------------------------------------------------------------------------

    def _seed(self, count: int) -> None:
        progress = Progress(count, self.stderr, label="leads")
        try:
            seeded = seed.seed(count, on_lead=progress.advance)
        except seed.NumberTaken as exc:
            raise CommandError(f"cannot seed the demo: {exc}") from exc
        progress.finish()
        made = "created" if seeded.organization_created else "already there"
        self.stdout.write(f"{data.ORGANIZATION} ({data.NUMBER}): {made}")
        self.stdout.write(
            f"leads: {seeded.leads} ({seeded.leads_created} new), conversations: "
            f"{seeded.conversations}, messages: {seeded.messages}"
        )

    # --- traffic --------------------------------------------------------------------------

    def _traffic(self, options: dict) -> None:
        schedule = self._schedule(options)
        missing = traffic.missing_secrets()
        if missing:
            raise CommandError(
                f"the webhook secrets are not configured here: {', '.join(missing)}. Set them to "
                f"the values the app at {options['url']} runs with (and PUBLIC_BASE_URL, now "
                f"{settings.PUBLIC_BASE_URL}, to the URL its Twilio signatures are checked "
                "against), e.g. ELEVENLABS_INITIATION_SECRET=... ELEVENLABS_WEBHOOK_SECRET=... "
                "TWILIO_AUTH_TOKEN=... python manage.py demo traffic"
            )
        try:
            client = traffic.AppClient(options["url"], options["timeout"])
        except ValueError as exc:
            raise CommandError(f"--url: {exc}") from exc
        try:
            self._check_reachable(client)
            mix = traffic.CallerMix(options["leads"], random.Random(options["seed"]))
            self._send(client, mix, schedule)
        finally:
            client.close()

    def _schedule(self, options: dict) -> traffic.Schedule:
        if options["rate"] <= 0:
            raise CommandError("--rate must be positive")
        if options["duration"] is not None and options["duration"] <= 0:
            raise CommandError("--duration must be positive")
        if options["report_every"] <= 0:
            raise CommandError("--report-every must be positive")
        return traffic.Schedule(options["rate"], options["duration"], options["report_every"])

    def _check_reachable(self, client: traffic.AppClient) -> None:
        try:
            client.request("GET", "/api/monitoring/health/live")
        except traffic.AppUnreachable as exc:
            raise CommandError(f"the app at {client.base_url} is unreachable: {exc}") from exc

    def _send(self, client: traffic.AppClient, mix, schedule: traffic.Schedule) -> None:
        until = f"for {schedule.duration:g} s" if schedule.duration else "until Ctrl-C"
        self.stdout.write(
            f"sending {schedule.rate:g} deliveries/s to {client.base_url} {until} "
            f"(calls to {data.NUMBER}: initiation then post-call; texts: Twilio SMS)"
        )
        tally = traffic.Tally()
        try:
            with stopped_by_sigterm():
                seconds = traffic.run(client, mix, schedule, tally, on_report=self._report)
        except traffic.Refused as exc:
            raise CommandError(
                f"the app refused the {exc.endpoint} webhook (HTTP {exc.status}: {exc.error}); "
                f"{traffic.SIGNED_WITH[exc.endpoint]} must match the app's"
            ) from exc
        except traffic.AppUnreachable as exc:
            self.stdout.write(f"sent: {traffic.describe(tally.total)}")
            raise CommandError(f"the app at {client.base_url} stopped answering: {exc}") from exc
        sent = sum(tally.total.values())
        self.stdout.write(
            f"sent {sent} deliveries in {seconds:.1f} s ({sent / seconds if seconds else 0:.1f}/s)"
            f": {traffic.describe(tally.total)}"
        )

    def _report(self, elapsed: float, counts: Counter) -> None:
        sent = sum(counts.values())
        self.stdout.write(f"{elapsed:6.0f} s  {sent} sent  {traffic.describe(counts)}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def stopped_by_sigterm():
    """SIGTERM ends the traffic like Ctrl-C does: the summary is still printed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
