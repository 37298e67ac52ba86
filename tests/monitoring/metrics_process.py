"""Run as a separate app process by test_metrics_aggregate:
`python -m tests.monitoring.metrics_process <name> <n>` records n requests to the webhook_sms
group (each with one cache hit in the "leads" namespace), flushes its window to the test
database the way a served process's flusher does, prints `<name> <process id> <window id>`
and exits."""

import os
import sys

import django


def main(name: str, n: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
    django.setup()
    from monitoring.cache import gate
    from monitoring.identity import PROCESS_ID
    from monitoring.metrics import store
    from monitoring.metrics.recorder import recorder

    for i in range(n):
        recorder.record("webhook_sms", 200, 0.004 + i / 1000, 2)
        gate.stats.count("leads", "hits")
    window = store.flush()
    if window is None:
        print(f"{name} {PROCESS_ID} none", flush=True)
        sys.exit(1)
    print(f"{name} {PROCESS_ID} {window.id}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
