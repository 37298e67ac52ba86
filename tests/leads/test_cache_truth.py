"""The cache tells the truth when Redis loses acknowledged data, fails over, evicts or stalls:
each failure reproduced against private redis-servers configured as production ones are, and
the value read after an acknowledged write asserted exactly."""

import threading
import time

import pytest
from django.test import override_settings

from leads import services
from leads.models import Lead
from monitoring import events
from monitoring.cache import gate, switch
from monitoring.models import SwitchAudit
from tests.conftest import turn_caching, using_redis
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.forwarder import Forwarder
from tests.leads.cache_modes import evicting_redis
from tests.leads.test_stale_data import cached_name, warm_lead
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)


def value_keys(server: RedisServer, namespace: str) -> list[bytes]:
    return list(server.client().scan_iter(match=f"*:v:{namespace}:*"))


def resets() -> list[SwitchAudit]:
    return list(SwitchAudit.objects.filter(actor="system", action="reset"))


@pytest.fixture
def private_redis(request):
    """A private redis-server (options from the test's `redis_args` marker), the gate on it,
    caching on, and settling off so a test can restart it at once."""
    marker = request.node.get_closest_marker("redis_args")
    server = RedisServer(args=marker.args if marker else ()).start()
    with (
        using_redis(server.url),
        override_settings(REDIS_SERVER_SETTLE_SECONDS=0, REDIS_BREAKER_COOLDOWN=0.2),
    ):
        turn_caching(True)
        yield server
    server.close()


def read_until_cached(expected: str, attempts: int = 40) -> list[str]:
    """Reads (each must be `expected`) until one is served from the cache again."""
    seen = []
    for _ in range(attempts):
        hits = gate.stats.snapshot()["ctx"]["hits"]
        seen.append(cached_name())
        if gate.stats.snapshot()["ctx"]["hits"] > hits:
            return seen
        time.sleep(0.05)
    return seen


# --- 1. data loss ---------------------------------------------------------------------------


def test_it_serves_no_entry_back_from_an_older_snapshot_after_a_restart(private_redis):
    lead = warm_lead()
    private_redis.snapshot()  # what the restart will load: the entry and its tokens
    services.update_lead(lead["id"], name="After")  # committed, invalidation delivered
    assert cached_name() == "After"
    private_redis.kill()
    private_redis.start()  # same port, same directory: the older snapshot is back
    assert value_keys(private_redis, "ctx"), "the snapshot brought the old entry back"

    seen = read_until_cached("After")

    assert set(seen) == {"After"}
    assert seen and gate.stats.snapshot()["ctx"]["hits"] >= 1
    (audit,) = resets()
    assert "the Redis server changed" in audit.reason
    assert audit.generation == switch.read_state().generation


@pytest.mark.parametrize("command", ["flushall", "flushdb"])
def test_it_starts_a_new_generation_when_redis_is_flushed(private_redis, command):
    lead = warm_lead()
    generation = switch.read_state().generation
    getattr(private_redis.client(), command)()
    services.update_lead(lead["id"], name="After")

    seen = read_until_cached("After")

    assert set(seen) == {"After"}
    assert switch.read_state().generation == generation + 1
    (audit,) = resets()
    assert f"the marker of generation {generation} is gone" in audit.reason


def test_it_serves_no_entry_a_promoted_lagging_replica_kept(django_db_blocker):
    primary = RedisServer().start()
    replica = RedisServer(args=("--replicaof", "127.0.0.1", str(primary.port))).start()
    address = Forwarder(primary.port)
    try:
        with (
            using_redis(address.url),
            override_settings(REDIS_SERVER_SETTLE_SECONDS=0, REDIS_BREAKER_COOLDOWN=0.2),
        ):
            turn_caching(True)
            lead = warm_lead()
            primary.client().wait(1, 2000)  # the replica has the entry
            replica.hang()  # it lags: it will miss the invalidation
            services.update_lead(lead["id"], name="After")
            assert cached_name() == "After"
            primary.kill()
            replica.resume()
            replica.client().replicaof("NO", "ONE")  # promoted, holding the old entry
            address.switch(replica.port)
            assert value_keys(replica, "ctx")

            seen = read_until_cached("After")

            assert set(seen) == {"After"}
            (audit,) = resets()
            assert "the Redis server changed" in audit.reason
    finally:
        address.close()
        replica.close()
        primary.close()


# --- 2. eviction ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "volatile-lru"])
def test_it_shows_every_list_and_counter_after_a_write_under_eviction(policy):
    server = RedisServer(args=("--maxmemory", "3mb", "--maxmemory-policy", policy)).start()
    try:
        with using_redis(server.url), override_settings(REDIS_BREAKER_COOLDOWN=0.2):
            turn_caching(True)
            org = make_org()
            lead, _ = services.find_or_create_lead(org.id, CALLER)
            services.update_lead(lead["id"], name="Before")
            pages = [{"search": s} for s in ("", "f", "F", "+1555")]
            filler = server.client()
            for round_ in range(60):  # hits keep the entries hot; filler pushes memory over
                for page in pages:
                    assert services.lead_list(**page)["results"][0]["name"] == "Before"
                assert services.lead_counts()["new"] == 1
                filler.set(f"filler:{round_}", b"x" * 100_000, ex=3600)
            assert server.client().info("stats")["evicted_keys"] > 0

            services.update_lead(lead["id"], name="After", status="hot")

            for page in pages:
                assert services.lead_list(**page)["results"][0]["name"] == "After"
            assert (services.lead_counts()["new"], services.lead_counts()["hot"]) == (0, 1)
    finally:
        server.close()


def test_it_passes_the_services_contract_under_eviction_pressure():
    """The contract's answers (context, lists, counters, timeline) after each write, while
    filler traffic keeps the server evicting (the whole contract suite runs in this mode too:
    tests/leads/test_services_contract.py)."""
    with evicting_redis() as server:
        org = make_org()
        lead, _ = services.find_or_create_lead(org.id, CALLER)
        for n in range(15):
            name = f"name {n}"
            services.update_lead(lead["id"], name=name)
            for _ in range(3):
                assert cached_name() == name
                assert services.lead_list()["results"][0]["name"] == name
                assert services.lead_timeline(lead["id"])["lead"]["name"] == name
                assert services.lead_counts()["total"] == 1
        assert server.client().info("stats")["evicted_keys"] > 0


# --- 4. the recording batch -----------------------------------------------------------------


def test_it_records_every_other_call_of_a_batch_when_one_callers_lead_was_deleted(shared_redis):
    from django.utils import timezone

    from leads.models import Conversation, WebhookEvent
    from leads.webhooks.elevenlabs import record_initiations

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


# --- 5. a hung channel layer ----------------------------------------------------------------


def test_it_never_waits_on_a_hung_channel_layer(private_redis):
    layer_redis = RedisServer().start()
    try:
        layers = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [layer_redis.url]},
            }
        }
        with override_settings(CHANNEL_LAYERS=layers):
            from channels.layers import channel_layers

            channel_layers.backends.clear()
            lead = warm_lead()
            layer_redis.hang()
            durations = []
            for n in range(5):
                started = time.perf_counter()
                events.publish("breaker.changed", {"n": n})
                switch.bump_generation(actor="ops", reason=f"flush {n}", source="cli")
                services.update_lead(lead["id"], name=f"After {n}")
                durations.append(time.perf_counter() - started)
            # A generous bound on a noisy machine; today's code waited about 5 s per write.
            assert max(durations) < 1.0, durations
            assert cached_name() == "After 4"
            channel_layers.backends.clear()
    finally:
        layer_redis.close()


# --- 8. intermittent stalls -----------------------------------------------------------------


def _writes_and_reads(lead: dict, seconds: float) -> float:
    """Writes and reads the caller for `seconds`, asserting every read; the call contexts'
    hit rate meanwhile."""
    before = dict(gate.stats.snapshot().get("ctx", {}))
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        n += 1
        services.update_lead(lead["id"], name=f"name {n}")
        for _ in range(3):
            assert cached_name() == f"name {n}"
        time.sleep(0.02)
    after = gate.stats.snapshot()["ctx"]
    hits, misses = (after[k] - before.get(k, 0) for k in ("hits", "misses"))
    return hits / (hits + misses)


@pytest.mark.redis_args("--enable-debug-command", "yes")
def test_it_keeps_the_generation_and_the_hit_rate_through_a_run_of_short_stalls(private_redis):
    lead = warm_lead()
    calm_rate = _writes_and_reads(lead, 3)
    generation = switch.read_state().generation
    stop = threading.Event()

    def stall():
        client = private_redis.client()
        while not stop.is_set():
            client.execute_command("DEBUG", "SLEEP", "0.07")  # above the 50 ms socket timeout
            stop.wait(0.2)

    staller = threading.Thread(target=stall, daemon=True)
    staller.start()
    try:
        stalled_rate = _writes_and_reads(lead, 8)
    finally:
        stop.set()
        staller.join(timeout=5)
    assert switch.read_state().generation - generation <= 1
    assert stalled_rate >= calm_rate - 0.10, (calm_rate, stalled_rate)


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
