import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from monitoring import runtime
from monitoring.alerts import delivery
from monitoring.alerts.evaluator import Evaluator
from monitoring.identity import PROCESS_ID


class Command(BaseCommand):
    help = (
        "Run monitoring in its own process: the alert evaluator (one active per deployment, the "
        "others wait on its lease), the Redis sampling and its metric windows, the switch "
        "refresher and the notification worker. Set MONITORING_IN_APP=false on the app "
        "processes so they leave it to this one."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="one round, send what is due, then exit"
        )

    def handle(self, *args, once: bool, **options):
        if not settings.REDIS_MONITORING_ENABLED:
            raise CommandError("REDIS_MONITORING_ENABLED=false: the evaluator is turned off")
        if once:
            self.once()
            return
        done = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: done.set())
        runtime.start_monitor()
        self.stdout.write(f"evaluator {PROCESS_ID} running (Ctrl-C stops)")
        done.wait()
        runtime.stop(role="monitor")
        self.stdout.write("evaluator stopped")

    def once(self) -> None:
        active = Evaluator().round()
        self.stdout.write("evaluated" if active else "another evaluator holds the lease")
        sent = delivery.deliver_due()
        if sent:
            self.stdout.write(f"{sent} notification{'s' if sent != 1 else ''} attempted")
