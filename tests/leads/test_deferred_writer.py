"""The deferred writer: off the response path normally, inline once its backlog is full."""

import threading

from django.test import override_settings

from leads.webhooks.deferred import DeferredWriter
from monitoring import counters


def test_it_runs_jobs_on_worker_threads():
    writer, threads = DeferredWriter(), []
    with override_settings(DEFERRED_WORKERS=2, DEFERRED_MAX_QUEUE=100):
        for _ in range(5):
            writer.submit(lambda: threads.append(threading.current_thread().name))
        assert writer.drain(5)
    assert threads == ["opsdash-deferred"] * 5


def test_it_runs_a_job_in_the_callers_thread_once_the_backlog_is_full():
    writer, threads = DeferredWriter(), []
    counters.reset()
    with override_settings(DEFERRED_MAX_QUEUE=0):
        writer.submit(lambda: threads.append(threading.current_thread().name))
    assert threads == [threading.current_thread().name]
    assert counters.snapshot()["deferred.inline"] == 1
    assert writer.pending() == 0
