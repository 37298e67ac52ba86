"""Run as a separate app process by test_cache_truth: `python -m tests.leads.dying_writer
<lead id> <name> <die|exit>` renames the lead in a transaction; with `die`, the process is
killed (os._exit) right after the commit, before its invalidation is sent; with `exit`, it ends
normally. Prints `enlisted <process id>` before the write."""

import os
import sys

import django


def main(lead_id: int, name: str, how: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
    django.setup()
    from django.db import transaction

    from leads import services
    from monitoring.cache import writers

    writers.enlistment.enlist()
    print(f"enlisted {writers.process_id()}", flush=True)
    with transaction.atomic():
        if how == "die":
            # Registered first, so it runs first: the commit is done, the invalidation not.
            transaction.on_commit(lambda: os._exit(9))
        services.update_lead(lead_id, name=name)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
