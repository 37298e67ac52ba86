"""Run as a separate answering process by test_record_worker: `python -m
tests.leads.spooling_writer <organization id> <first caller> <calls> <exit|die>` spools that
many answered calls of new callers (+1555200nnnn) with call SIDs CA<caller number>; with `die`
the process then ends at once (os._exit: its file is left open, as a killed process leaves it),
with `exit` normally (its file rotated at exit). Prints `spooled <identity>`."""

import os
import sys

import django


def main(organization_id: int, first: int, calls: int, how: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
    django.setup()
    from datetime import UTC, datetime

    from leads.webhooks import recording, spool
    from leads.webhooks.initiation_records import Call

    started = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    for n in range(first, first + calls):
        call = Call(organization_id, f"+1555200{n:04d}", None, {"call_sid": f"CA{n}"}, started)
        spool.writer.append(recording.as_record(call._replace(answer=f"answer-{n}")))
    print(f"spooled {spool.identity()}", flush=True)
    if how == "die":
        os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
