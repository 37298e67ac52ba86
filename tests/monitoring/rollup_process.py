"""Run as a separate process by test_rollups: `python -m tests.monitoring.rollup_process
<name> <now as an ISO time>` waits for a line on stdin (so two start together), rolls the
history up as a served process's flusher does, and prints `<name> <minutes> <hours>`."""

import os
import sys
from datetime import datetime

import django


def main(name: str, now: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
    django.setup()
    from monitoring.metrics import rollups

    sys.stdin.readline()
    written = rollups.roll_up(datetime.fromisoformat(now))
    print(f"{name} {written['minute']} {written['hour']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
