"""The ElevenLabs conversation-initiation webhook under load and failure: no SQL and one Redis
round trip when warm, the same answer in every cache mode, and a complete answer with safe
defaults (within the time budget) when anything behind it fails."""

import asyncio
import json
import threading
import time
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.test import AsyncClient, override_settings

from leads.models import Conversation
from leads.services import reads
from leads.webhooks import variables
from leads.webhooks.deferred import writer
from monitoring.cache import gate
from tests.conftest import turn_caching
from tests.factories import CALLER, make_org
from tests.leads.cache_modes import MODES, cache_mode
from tests.leads.initiation_support import (
    CALL_SID,
    PATH,
    SECRET,
    answer,
    assert_nothing_stored,
    fallback_count,
    fixture_payload,
    initiate,
    known_caller,
    known_caller_variables,
    without_clock,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("initiation_settings", "caching_on"),
]


# --- warm: no SQL, one Redis round trip ---------------------------------------------------


@contextmanager
def sql_in_every_thread(monkeypatch):
    """Every query any thread runs (the view works in a worker thread), as (thread, sql)."""
    seen: list[tuple[str, str]] = []
    original = CursorWrapper._execute_with_wrappers

    def counting(self, sql, params, many, executor):
        seen.append((threading.current_thread().name, sql))
        return original(self, sql, params, many, executor)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counting)
    try:
        yield seen
    finally:
        monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", original)


@contextmanager
def writer_held():
    """The deferred writer busy until the block ends, so what is measured inside is the
    request alone; its jobs run (and are drained) afterwards."""
    release = threading.Event()

    def hold() -> None:
        release.wait(10)

    for _ in range(settings.DEFERRED_WORKERS):  # every worker thread held
        writer.submit(hold)
    try:
        yield
    finally:
        release.set()
        writer.drain()


def commands_during(server, action) -> dict[str, int]:
    before = server.command_calls()
    action()
    after = server.command_calls()
    names = set(before) | set(after)
    return {
        n: after.get(n, 0) - before.get(n, 0) for n in names if after.get(n, 0) != before.get(n, 0)
    }


def test_it_answers_a_warm_call_with_no_sql_and_one_redis_round_trip(redis_server, monkeypatch):
    # A refresh interval longer than the test: the switch is not re-read inside a count (in a
    # served app the background refresher does that, off every request).
    with override_settings(SWITCH_REFRESH_SECONDS=3600):
        turn_caching(True)
        org = make_org()
        known_caller(org)
        initiate()  # the call is recorded: the requests below are repeats and write nothing
        writer.drain()
        gate.flush(actor="test", reason="start cold", source="system")
        responses = []
        with writer_held(), sql_in_every_thread(monkeypatch) as cold_queries:
            cold = commands_during(redis_server, lambda: responses.append(initiate()))
        # The counter sees the worker thread's queries: the cold context's five.
        assert len(cold_queries) == 5
        assert all(thread != threading.current_thread().name for thread, _ in cold_queries)
        # One read (entry, marker, scope tokens), the missing tokens created (two of them),
        # one guarded store (marker and tokens compared); the scripts' own commands count.
        assert cold == {"mget": 1, "evalsha": 2, "get": 5, "set": 3}
        with writer_held(), sql_in_every_thread(monkeypatch) as warm_queries:
            warm = commands_during(redis_server, lambda: responses.append(initiate()))
        assert warm_queries == []
        assert warm == {"mget": 1}
    cold_answer, warm_answer = (r.json() for r in responses)
    assert without_clock(warm_answer["dynamic_variables"]) == without_clock(
        cold_answer["dynamic_variables"]
    )
    assert Conversation.objects.filter(call_sid=CALL_SID).count() == 1


# --- every cache mode, the same answer ----------------------------------------------------


def test_it_gives_the_same_variables_in_every_cache_mode(shared_redis, frozen_now):
    org = make_org()
    known_caller(org)
    initiate()  # the call is recorded once; the initiations below are repeats of it
    writer.drain()
    before = fallback_count()
    answers = {}
    for mode in MODES:
        with cache_mode(mode, shared_redis):
            answers[mode] = []
            for _ in range(2):  # a miss, then (caching on) a hit
                response = initiate()
                writer.drain()
                assert response.status_code == 200
                answers[mode].append(without_clock(response.json()["dynamic_variables"]))
        gate.reset()
    # The call in progress (initiated, recorded above) is not a previous conversation.
    expected = without_clock(known_caller_variables(org))
    assert answers == {mode: [expected, expected] for mode in MODES}
    assert fallback_count() == before
    assert Conversation.objects.count() == 2


# --- failures behind the answer: still 200, every variable --------------------------------


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (OperationalError("the database is unreachable"), "OperationalError"),
        (RuntimeError("a bug in the loader"), "RuntimeError"),
    ],
)
def test_it_answers_with_defaults_when_the_context_cannot_be_loaded(
    monkeypatch, caplog, error, logged
):
    make_org()

    def broken(org_number, phone):
        raise error

    monkeypatch.setattr(reads, "load_call_context", broken)
    before = fallback_count()
    response = initiate()
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body["dynamic_variables"]) == set(variables.DEFAULTS)
    assert without_clock(body["dynamic_variables"]) == without_clock(
        {**variables.DEFAULTS, "customer_phone": CALLER}
    )
    assert body["dynamic_variables"]["current_day"] in variables.DAY_NAMES
    assert body == answer(body["dynamic_variables"])
    assert fallback_count() == before + 1
    assert f"initiation answered with defaults: {logged}: {error}" in caplog.messages
    assert_nothing_stored()


def test_it_answers_with_defaults_within_the_time_budget(monkeypatch, caplog):
    make_org()
    finished = threading.Event()
    load = reads.load_call_context

    def slow(org_number, phone):
        try:
            time.sleep(1.0)
            return load(org_number, phone)
        finally:
            finished.set()

    monkeypatch.setattr(reads, "load_call_context", slow)
    before = fallback_count()

    # Through the ASGI handler on a running loop, as daphne serves it. (The sync test Client
    # runs each async view in a fresh event loop that, on closing, waits for the abandoned
    # worker thread, so it cannot show when the answer was ready.)
    async def post():
        started = time.perf_counter()
        response = await AsyncClient(enforce_csrf_checks=True).post(
            PATH,
            json.dumps(fixture_payload()),
            content_type="application/json",
            headers={"X-Webhook-Secret": SECRET},
        )
        return response, time.perf_counter() - started

    with override_settings(INITIATION_TIME_BUDGET=0.2):
        response, elapsed = asyncio.run(post())
    assert elapsed < 1.0  # the time budget is this contract's subject
    assert response.status_code == 200
    dynamic = response.json()["dynamic_variables"]
    assert set(dynamic) == set(variables.DEFAULTS)
    assert without_clock(dynamic) == without_clock({**variables.DEFAULTS, "customer_phone": CALLER})
    assert fallback_count() == before + 1
    assert any(
        m.startswith("initiation answered with defaults: TimeoutError") for m in caplog.messages
    )
    assert finished.wait(5)
    writer.drain()
