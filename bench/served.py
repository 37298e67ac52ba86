"""The app as the mixed-load scenarios serve it: `opsdash.asgi:application`, unchanged, plus a
count of every SQL statement the process runs (`cursor.execute`/`executemany` through Django,
the same definition as the app's own `sql_per_request`; BEGIN/COMMIT are not statements here),
by who ran it:

- request: on a request's path, in any thread it used (the app's request context is set);
- deferred: the deferred writer's thread (writes taken off the response path);
- background: the app's other threads (switch refresher, metrics flusher, alert evaluator);
- other: anything else (none expected).

The totals are written as JSON to the file named by BENCH_SQL_COUNTS every 0.2 s, for the bench
process to read. Served as `daphne bench.served:application`.
"""

import json
import os
import threading
import time

from django.db.backends.signals import connection_created

from monitoring.metrics.recorder import current_request

COUNTS = {"request": 0, "deferred": 0, "background": 0, "other": 0}
_lock = threading.Lock()


def _who() -> str:
    if current_request.get() is not None:
        return "request"
    name = threading.current_thread().name
    if name == "opsdash-deferred":
        return "deferred"
    return "background" if name.startswith("opsdash-") else "other"


def count_statement(execute, sql, params, many, context):
    who = _who()
    with _lock:
        COUNTS[who] += 1
    return execute(sql, params, many, context)


def _install(sender, connection, **kwargs) -> None:
    if count_statement not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, count_statement)


def _dump_forever(path: str) -> None:
    while True:
        with _lock:
            document = {"at": time.time(), **COUNTS}
        with open(f"{path}.tmp", "w") as out:
            json.dump(document, out)
        os.replace(f"{path}.tmp", path)
        time.sleep(0.2)


# Before the app is set up: its start-up already opens connections.
connection_created.connect(_install, dispatch_uid="bench-served-count-statements")
from opsdash.asgi import application  # noqa: E402, F401  (what daphne serves)

if os.environ.get("BENCH_SQL_COUNTS"):
    threading.Thread(
        target=_dump_forever, args=(os.environ["BENCH_SQL_COUNTS"],), name="bench-sql", daemon=True
    ).start()
