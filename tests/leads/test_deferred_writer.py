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


def test_it_hands_queued_items_of_a_batched_job_over_together():
    writer, batches, others = DeferredWriter(), [], []
    release = threading.Event()
    with override_settings(DEFERRED_WORKERS=1, DEFERRED_MAX_QUEUE=100):
        writer.submit(release.wait, 5)  # the one worker is busy while the items queue up
        for item in (1, 2):
            writer.submit_batched(batches.append, item)
        writer.submit(others.append, "other job")
        writer.submit_batched(batches.append, 3)
        release.set()
        assert writer.drain(5)
    assert batches == [[1, 2, 3]]
    assert others == ["other job"]
    assert writer.pending() == 0


def test_it_writes_a_batched_item_alone_in_the_callers_thread_once_the_backlog_is_full():
    writer, batches = DeferredWriter(), []
    with override_settings(DEFERRED_MAX_QUEUE=0):
        writer.submit_batched(batches.append, "item")
    assert batches == [["item"]]
