import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from monitoring.alerts.evaluator import Evaluator


class Command(BaseCommand):
    help = (
        "Run the alert evaluator in the foreground (for deployments that keep it out of the app "
        "processes). Only one evaluator is active per deployment: the others wait on the lease."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one round, then exit")

    def handle(self, *args, once: bool, **options):
        if not settings.REDIS_MONITORING_ENABLED:
            raise CommandError("REDIS_MONITORING_ENABLED=false: the evaluator is turned off")
        evaluator = Evaluator()
        if once:
            active = evaluator.round()
            self.stdout.write("evaluated" if active else "another evaluator holds the lease")
            return
        done = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: done.set())
        self.stdout.write(f"evaluator {evaluator.holder} running (Ctrl-C stops)")
        while not done.wait(settings.MONITORING_EVALUATE_SECONDS):
            evaluator.round()
        evaluator.stop()
        self.stdout.write("evaluator stopped")
