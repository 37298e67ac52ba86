"""Recording that survives the answering process: the app served by daphne in a real process,
killed with SIGKILL right after it answered a new caller; the call is still recorded, by its
post-call report alone when its initiation record is lost, and by `manage.py record_worker`
from the spool when it is not. The worker consumes the files of several writers (dead or
alive), deletes them, and records each call once however often a file is recorded. And a new
caller's answer does the same work as a known caller's."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db.backends.utils import CursorWrapper
from django.test import Client, override_settings

from leads import services
from leads.models import Conversation, Lead, Message, WebhookEvent
from leads.webhooks import initiation_records, spool
from leads.webhooks.deferred import writer
from tests.conftest import missing_service, turn_caching
from tests.e2e.support import Server
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.monitoring.metrics_support import ROOT, subprocess_environment
from tests.redis_servers import RedisServer, redis_server_binary

pytestmark = pytest.mark.django_db(transaction=True)

DATA = Path(__file__).parent / "data"
SECRET = "record-worker-initiation-secret"
INITIATION = "/webhooks/elevenlabs/conversation-initiation"
POST_CALL = "/webhooks/elevenlabs/post-call"
CALL_SID = "CA5f2d0c9e8b7a6f5e4d3c2b1a0f9e8d7c"  # the recorded payloads' call


def recorded(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def cache_redis():
    if redis_server_binary() is None:
        missing_service("a redis-server binary")
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def app(tmp_path, cache_redis):
    """The app under daphne, leaving all recording to the record worker (none runs yet)."""
    served = Server(
        tmp_path,
        cache_redis,
        RECORD_SPOOL_DIR=str(tmp_path / "spool"),
        RECORD_WORKER="true",
        ELEVENLABS_INITIATION_SECRET=SECRET,
    )
    try:
        yield served
    finally:
        served.stop()


def answer_then_kill(app: Server) -> dict:
    """Start the app, answer the recorded initiation (a new caller), SIGKILL the app at once."""
    app.start()
    request = urllib.request.Request(
        app.url + INITIATION,
        data=json.dumps(recorded("conversation_initiation.json")).encode(),
        headers={"Content-Type": "application/json", "X-Webhook-Secret": SECRET},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    os.kill(app.process.pid, signal.SIGKILL)
    app.process.wait(timeout=10)
    app.process = None
    return answer


def record_worker(spool_dir: Path, *options: str) -> subprocess.CompletedProcess:
    environment = subprocess_environment(RECORD_SPOOL_DIR=str(spool_dir), REDIS_ENABLED="")
    return subprocess.run(
        [sys.executable, "manage.py", "record_worker", *options],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def spooled_lines(spool_dir: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(spool_dir.glob(f"*/*{spool.SUFFIX}"))
        for line in path.read_text().splitlines()
    ]


def test_it_records_a_call_whose_initiation_record_is_lost_from_its_post_call_report(app, tmp_path):
    org = make_org()
    answer = answer_then_kill(app)
    assert answer["dynamic_variables"]["organization_name"] == org.name
    assert [line["payload"]["call_sid"] for line in spooled_lines(tmp_path / "spool")] == [CALL_SID]
    shutil.rmtree(tmp_path / "spool")  # the initiation's record is lost
    assert not Lead.objects.exists()

    with override_settings(WEBHOOK_VERIFY=False, ELEVENLABS_WEBHOOK_SECRET=""):
        body = json.dumps(recorded("post_call_transcription.json"))
        response = Client().post(POST_CALL, body, content_type="application/json")
    assert (response.status_code, response.json()["status"]) == (200, "processed")

    lead = Lead.objects.get()
    assert (lead.organization_id, lead.phone, lead.name, lead.status) == (
        org.id,
        CALLER,
        "Dana Scully",
        "hot",  # as the report's analysis says
    )
    call = Conversation.objects.get()
    assert (call.lead_id, call.call_sid, call.status, call.duration_seconds) == (
        lead.id,
        CALL_SID,
        "completed",
        94,
    )
    assert call.provider_id == "conv_01jx4w2n7c8d9e0f1g2h3j4k5m"
    turns = list(call.messages.order_by("created_at").values_list("role", flat=True))
    assert turns == ["agent", "customer", "agent", "customer", "agent"]
    assert Message.objects.filter(lead=lead).count() == 5


def test_it_records_a_call_spooled_by_a_killed_app_with_the_record_worker(app, tmp_path):
    org = make_org()
    answer_then_kill(app)
    assert not Conversation.objects.exists()  # the app recorded nothing: the worker does

    done = record_worker(tmp_path / "spool", "--once")
    assert done.returncode == 0, done.stderr
    assert "recorded 1 call(s) from " in done.stdout

    lead = Lead.objects.get()
    assert (lead.organization_id, lead.phone, lead.status) == (org.id, CALLER, "new")
    call = Conversation.objects.get()
    assert (call.lead_id, call.call_sid, call.status) == (lead.id, CALL_SID, "initiated")
    event = WebhookEvent.objects.get()
    assert (event.idempotency_key, event.status) == (
        f"conversation_initiation:{CALL_SID}",
        "processed",
    )
    assert spooled_lines(tmp_path / "spool") == []


def spool_from_a_process(org_id: int, first: int, calls: int, how: str, spool_dir: Path) -> str:
    environment = subprocess_environment(RECORD_SPOOL_DIR=str(spool_dir), REDIS_ENABLED="")
    done = subprocess.run(
        [sys.executable, "-m", "tests.leads.spooling_writer", str(org_id), str(first)]
        + [str(calls), how],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def test_it_records_the_files_of_two_writers_once_and_deletes_them(tmp_path):
    org = make_org()
    spool_dir = tmp_path / "spool"
    spool_from_a_process(org.id, 0, 150, "die", spool_dir)  # its file left in open/
    spool_from_a_process(org.id, 150, 3, "exit", spool_dir)  # its file rotated into ready/
    assert len(list((spool_dir / spool.OPEN).iterdir())) == 1
    assert len(list((spool_dir / spool.READY).iterdir())) == 1
    kept = tmp_path / "copy"
    shutil.copytree(spool_dir, kept)

    first = record_worker(spool_dir, "--once")
    assert first.returncode == 0, first.stderr
    # Batches of RECORD_BATCH_SIZE (100): the dead writer's file in two, the other in one.
    batches = [line for line in first.stdout.splitlines() if line.startswith("recorded ")]
    assert sorted(int(line.split()[1]) for line in batches) == [3, 50, 100]
    assert list(spool_dir.glob(f"*/*{spool.SUFFIX}")) == []

    again = record_worker(spool_dir, "--once")
    assert [line for line in again.stdout.splitlines() if line.startswith("recorded ")] == []

    for path in kept.glob(f"*/*{spool.SUFFIX}"):  # both files, recorded again
        shutil.copy(path, spool_dir / spool.READY / path.name)
    replayed = record_worker(spool_dir, "--once")
    assert replayed.returncode == 0, replayed.stderr
    assert list(spool_dir.glob(f"*/*{spool.SUFFIX}")) == []

    assert Lead.objects.count() == 153
    assert Conversation.objects.count() == 153
    assert sorted(Conversation.objects.values_list("call_sid", flat=True)) == sorted(
        f"CA{n}" for n in range(153)
    )
    assert WebhookEvent.objects.count() == 153
    assert set(WebhookEvent.objects.values_list("status", "duplicates")) == {("processed", 0)}


@override_settings(RECORD_WORKER=True)  # this process's writer threads leave the spool alone
def test_it_leaves_a_file_whose_batch_fails_for_the_next_try(monkeypatch):
    from django.db import OperationalError
    from django.utils import timezone

    from leads.webhooks import recording

    org = make_org()
    call = initiation_records.Call(org.id, CALLER, None, {"call_sid": "CA1"}, timezone.now(), "a-1")
    spool.writer.append(recording.as_record(call))

    def unavailable(calls):
        raise OperationalError("the database is unreachable")

    monkeypatch.setattr(recording, "record_initiations", unavailable)
    with pytest.raises(OperationalError):
        recording.record_spool()
    assert len(list((spool.directory() / spool.READY).iterdir())) == 1
    monkeypatch.undo()
    assert recording.record_spool().calls == 1
    assert Conversation.objects.get().call_sid == "CA1"
    assert list(spool.directory().glob(f"*/*{spool.SUFFIX}")) == []


# --- the answer path: a new caller's costs what a known caller's does ------------------------


@contextmanager
def sql_in_every_thread(monkeypatch):
    seen: list[str] = []
    original = CursorWrapper._execute_with_wrappers

    def counting(self, sql, params, many, executor):
        seen.append(sql)
        return original(self, sql, params, many, executor)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counting)
    try:
        yield seen
    finally:
        monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", original)


def test_it_answers_a_new_caller_with_the_work_of_a_known_callers_answer(redis_server, monkeypatch):
    new_caller = "+15551239999"
    with override_settings(
        SWITCH_REFRESH_SECONDS=3600,
        RECORD_WORKER=True,  # nothing recorded in this process: the answer path alone counts
        ELEVENLABS_INITIATION_SECRET=SECRET,
        WEBHOOK_VERIFY=True,
        INITIATION_TIME_BUDGET=5.0,
    ):
        turn_caching(True)
        org = make_org()
        services.find_or_create_lead(org.id, CALLER)
        for phone in (CALLER, new_caller):  # both contexts cached: the known and the "no lead"
            services.call_context(ORG_NUMBER, phone)
        costs = {}
        for who, phone in (("known", CALLER), ("new", new_caller)):
            lines_before = len(spooled_lines(spool.directory()))
            payload = {"caller_id": phone, "called_number": ORG_NUMBER, "call_sid": f"CA{who}"}
            with sql_in_every_thread(monkeypatch) as sql:
                before = redis_server.command_calls()
                response = Client().post(
                    INITIATION,
                    payload,
                    content_type="application/json",
                    headers={"X-Webhook-Secret": SECRET},
                )
                after = redis_server.command_calls()
            assert response.status_code == 200
            commands = {
                n: after[n] - before.get(n, 0) for n in after if after[n] != before.get(n, 0)
            }
            appended = len(spooled_lines(spool.directory())) - lines_before
            costs[who] = (len(sql), commands, appended)
    assert costs["new"] == costs["known"] == (0, {"mget": 1}, 1)
    assert writer.pending() == 0  # nothing handed to this process's writer threads
    assert not Conversation.objects.exists()


# --- the spool's files -----------------------------------------------------------------------


def test_it_hands_a_file_over_when_the_spool_moves_and_drops_an_empty_one(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    with override_settings(RECORD_SPOOL_DIR=first, RECORD_WORKER=True):
        spool.writer.append({"n": 1})
    with override_settings(RECORD_SPOOL_DIR=second, RECORD_WORKER=True):
        spool.writer.append({"n": 2})
        assert spool.writer.rotate()
        assert not spool.writer.rotate()  # nothing written since
    assert [p.read_text() for p in (first / spool.READY).iterdir()] == ['{"n":1}\n']
    assert [p.read_text() for p in (second / spool.READY).iterdir()] == ['{"n":2}\n']
    assert list((first / spool.OPEN).iterdir()) == list((second / spool.OPEN).iterdir()) == []


def test_it_takes_back_the_files_a_dead_consumer_had_claimed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    pid = int(dead.stdout)
    root = tmp_path / "spool"
    claimed = root / spool.CLAIMED / f"{socket.gethostname()}~{pid}~1"
    claimed.mkdir(parents=True)
    (claimed / f"1~host~{pid}~1~1{spool.SUFFIX}").write_text('{"n":1}\n')
    assert spool.alive(claimed.name) is False
    assert spool.reclaim(root) == 1
    assert [p.name for p in (root / spool.READY).iterdir()] == [f"1~host~{pid}~1~1{spool.SUFFIX}"]
    assert not claimed.exists()
