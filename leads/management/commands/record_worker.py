import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

from leads.webhooks import recording, spool


class Command(BaseCommand):
    help = (
        "Record the answered calls the app spooled (RECORD_SPOOL_DIR), in batches, until "
        "SIGTERM or SIGINT (the file in hand is finished first). Run one per host, sharing "
        "VAR_DIR with the app; with RECORD_WORKER=true the app leaves all recording to it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="record what is spooled now, then exit"
        )

    def handle(self, *args, once, **options):
        stopping = threading.Event()
        if not once:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stopping.set())
        self.stdout.write(f"record_worker: spool {spool.directory()}, pid {spool.identity()}")
        self.stdout.flush()
        failed = False
        while not stopping.is_set():
            try:
                done = recording.record_spool(self._batch_recorded, stopping.is_set)
            except DatabaseError as exc:
                failed = True
                self.stderr.write(f"record_worker: {exc}; the file is kept for the next try")
                done = None
                stopping.wait(settings.RECORD_RETRY_SECONDS)
            finally:
                close_old_connections()
            if once and (done is not None or failed):
                break
            if done is not None and not done.files:
                stopping.wait(settings.RECORD_WORKER_POLL_SECONDS)
        self.stdout.write(f"record_worker: stopped; {spool.pending()} spool file(s) left")
        if once and failed:
            raise SystemExit(1)

    def _batch_recorded(self, name: str, calls: int, seconds: float) -> None:
        self.stdout.write(f"recorded {calls} call(s) from {name} in {seconds * 1000:.0f} ms")
        self.stdout.flush()
