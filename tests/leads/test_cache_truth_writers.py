"""The cache tells the truth around its writers: a recording batch with a deleted lead, an
invalidation that fails after commit, a writer that dies between commit and invalidation, a
process that missed the latest flip or flush, and a read in a transaction that rolls back."""

import time

import pytest
from django.test import override_settings

from leads import services
from leads.models import Lead
from monitoring.cache import gate, switch
from monitoring.models import SwitchAudit
from tests.conftest import turn_caching
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.test_stale_data import cached_name, warm_lead
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)


# --- 4. the recording batch -----------------------------------------------------------------


def test_it_records_every_other_call_of_a_batch_when_one_callers_lead_was_deleted(shared_redis):
    from django.utils import timezone

    from leads.models import Conversation, WebhookEvent
    from leads.webhooks.initiation_records import record_initiations

    org = make_org()
    leads = [services.find_or_create_lead(org.id, f"+1555123000{n}")[0] for n in range(1, 4)]
    now = timezone.now()
    calls = [
        (org.id, lead["phone"], lead["id"], {"call_sid": f"CA{n}"}, now)
        for n, lead in enumerate(leads)
    ]
    Lead.objects.filter(pk=leads[1]["id"]).delete()  # deleted after its call was answered

    record_initiations(calls)

    assert sorted(Conversation.objects.values_list("call_sid", flat=True)) == ["CA0", "CA1", "CA2"]
    assert WebhookEvent.objects.filter(status="processed").count() == 3
    moved = Conversation.objects.get(call_sid="CA1").lead
    assert (moved.phone, moved.pk != leads[1]["id"]) == (leads[1]["phone"], True)


# --- 6. an error after commit ----------------------------------------------------------------


def test_it_starts_a_new_generation_when_the_invalidation_itself_fails(shared_redis, monkeypatch):
    turn_caching(True)
    lead = warm_lead()
    generation = switch.read_state().generation

    def broken(**kwargs):
        raise RuntimeError("a bug between the commit and Redis")

    monkeypatch.setattr(gate, "invalidate", broken)
    services.update_lead(lead["id"], name="After")
    monkeypatch.undo()

    assert switch.read_state().generation == generation + 1
    assert cached_name() == "After"


def run_writer(server: RedisServer, lead_id: int, name: str, how: str) -> str:
    import subprocess
    import sys

    from django.conf import settings

    from tests.monitoring.metrics_support import subprocess_environment

    env = subprocess_environment(
        REDIS_URL=server.url,
        REDIS_KEY_PREFIX=settings.REDIS_KEY_PREFIX,
        REDIS_SERVER_SETTLE_SECONDS="0",
        WRITER_BEAT_SECONDS="0.25",
    )
    child = subprocess.run(
        [sys.executable, "-m", "tests.leads.dying_writer", str(lead_id), name, how],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == (9 if how == "die" else 0), child.stderr[-2000:]
    return child.stdout.split()[1]


@override_settings(WRITER_BEAT_SECONDS=0.25)
def test_it_starts_a_new_generation_when_a_writer_dies_between_commit_and_invalidation(
    private_redis, postgres
):
    from monitoring.cache import writers

    lead = warm_lead()
    generation = switch.read_state().generation

    dead = run_writer(private_redis, lead["id"], "After", "die")

    assert cached_name() == "Before"  # the committed write's invalidation was never sent
    time.sleep(1.2)  # four beats of silence
    assert writers.sweep() == [dead]
    assert cached_name() == "After"
    assert switch.read_state().generation == generation + 1
    audit = SwitchAudit.objects.get(action="lost")
    assert f"process {dead}" in audit.reason
    assert "stopped without a clean exit" in audit.reason
    assert writers.sweep() == []


@override_settings(WRITER_BEAT_SECONDS=0.25)
def test_it_leaves_the_cache_alone_when_a_writer_exits_cleanly(private_redis, postgres):
    from monitoring.cache import writers

    lead = warm_lead()
    generation = switch.read_state().generation

    run_writer(private_redis, lead["id"], "After", "exit")

    assert cached_name() == "After"
    time.sleep(1.2)
    assert writers.sweep() == []
    assert switch.read_state().generation == generation, list(
        SwitchAudit.objects.values_list("action", "reason")
    )


# --- 9. a second process that has not seen the latest flip or flush ---------------------------


class Reader:
    """A second app process on the same Redis and database, its switch copy never refreshed
    by time (only what the gate itself sees moves it)."""

    def __init__(self, server: RedisServer) -> None:
        import subprocess
        import sys

        from django.conf import settings

        from tests.monitoring.metrics_support import subprocess_environment

        env = subprocess_environment(
            REDIS_URL=server.url,
            REDIS_KEY_PREFIX=settings.REDIS_KEY_PREFIX,
            SWITCH_REFRESH_SECONDS="3600",
        )
        self.child = subprocess.Popen(
            [sys.executable, "-m", "tests.leads.reader_process", ORG_NUMBER, CALLER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.child.stdout.readline().strip() == "ready"

    def read(self) -> tuple[str, str]:
        self.child.stdin.write("read\n")
        self.child.stdin.flush()
        name, how = self.child.stdout.readline().rsplit(" ", 1)
        return name, how.strip()

    def close(self) -> None:
        self.child.stdin.close()
        self.child.wait(timeout=10)


@pytest.mark.parametrize("change", ["flush", "flip off and on"])
def test_it_serves_no_pre_write_value_in_a_process_that_missed_the_change(
    private_redis, postgres, change
):
    lead = warm_lead()
    reader = Reader(private_redis)
    try:
        # Served from the entry this process stored.
        assert reader.read() == ("Before", "hit")
        if change == "flush":
            gate.flush(actor="ops", reason="test", source="cli")
        else:
            turn_caching(False)
            turn_caching(True)
        services.update_lead(lead["id"], name="After")  # acknowledged

        assert reader.read()[0] == "After"
        assert reader.read()[0] == "After"
    finally:
        reader.close()


# --- 7. a read inside a transaction that rolls back ------------------------------------------


def test_it_caches_nothing_read_inside_a_transaction_that_rolls_back(shared_redis):
    from django.db import transaction

    turn_caching(True)
    org = make_org()

    with pytest.raises(RuntimeError), transaction.atomic():
        Lead.objects.create(organization=org, phone=CALLER, name="Never committed")
        assert cached_name() == "Never committed"  # loaded inside the transaction
        raise RuntimeError("rolled back")

    assert services.call_context(ORG_NUMBER, CALLER)["lead"] is None
    assert services.call_context(ORG_NUMBER, CALLER)["lead"] is None
