"""The cache tells the truth when Redis loses acknowledged data or evicts: a restart from an
older snapshot, a flush, a promoted lagging replica and eviction pressure, each reproduced
against private redis-servers configured as production ones are, and the value read after
an acknowledged write asserted exactly."""

import pytest
from django.test import override_settings

from leads import services
from monitoring.cache import gate, switch
from tests.conftest import turn_caching, using_redis
from tests.factories import CALLER, make_org
from tests.forwarder import Forwarder
from tests.leads.cache_modes import evicting_redis
from tests.leads.cache_truth_support import read_until_cached, resets, value_keys
from tests.leads.test_stale_data import cached_name, warm_lead
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)


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
