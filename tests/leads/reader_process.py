"""Run as a second app process by test_cache_truth: `python -m tests.leads.reader_process
<org number> <caller>` answers each `read` line on stdin with the caller's name from the call
context and whether it was a cache hit (`<name> hit|miss`). Its switch copy is refreshed only
when the test's settings say so (SWITCH_REFRESH_SECONDS), like a process that has not yet seen
the latest flip or flush."""

import os
import sys

import django


def main(org_number: str, caller: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
    django.setup()
    from leads import services
    from monitoring.cache import gate

    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "read":
            break
        hits = gate.stats.snapshot().get("ctx", {}).get("hits", 0)
        name = services.call_context(org_number, caller)["lead"]["name"]
        hit = gate.stats.snapshot()["ctx"]["hits"] > hits
        print(f"{name} {'hit' if hit else 'miss'}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
