"""The three ways stale data creeps in (DESIGN.md), each reproduced and shown not to."""

import threading

import pytest
from django.db import connection
from django.test import override_settings

from leads import services
from leads.models import Lead
from leads.services import reads
from leads.services.cache_keys import CTX
from monitoring.cache import gate
from monitoring.models import SwitchAudit
from tests.conftest import turn_caching, using_redis
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)


def cached_name() -> str:
    return services.call_context(ORG_NUMBER, CALLER)["lead"]["name"]


def warm_lead(name: str = "Before") -> dict:
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    services.update_lead(lead["id"], name=name)
    assert cached_name() == name
    assert gate.stats.snapshot()["ctx"]["stores"] == 1
    return lead


def test_it_reads_an_update_made_while_caching_was_off(shared_redis):
    turn_caching(True)
    lead = warm_lead()
    turn_caching(False)
    # A write that never invalidated (as a process that missed the flip might): only the
    # generation bump on enabling can keep the old entry from being served.
    Lead.objects.filter(pk=lead["id"]).update(name="After")
    generation = gate.switch.current().generation
    turn_caching(True)
    assert gate.switch.current().generation == generation + 1
    assert cached_name() == "After"


def test_it_reads_a_service_update_made_while_caching_was_off(shared_redis):
    turn_caching(True)
    lead = warm_lead()
    turn_caching(False)
    services.update_lead(lead["id"], name="After")
    turn_caching(True)
    assert cached_name() == "After"


def test_it_reads_an_update_made_while_the_environment_pinned_caching_off(shared_redis):
    turn_caching(True)
    lead = warm_lead()
    generation = gate.switch.current().generation
    with override_settings(REDIS_ENABLED=False):  # a process deployed with the emergency lever
        services.update_lead(lead["id"], name="After")  # it cannot invalidate anything
        assert cached_name() == "After"
    assert cached_name() == "After"  # back on the runtime switch: the old entry is not served
    assert gate.switch.current().generation == generation + 1
    assert SwitchAudit.objects.filter(action="skipped").count() == 1


@pytest.fixture
def persistent_redis():
    """A private Redis that keeps its data across a stop and start (append-only file), so an
    entry cached before an outage is still there after it."""
    server = RedisServer(persistent=True).start()
    with using_redis(server.url), override_settings(REDIS_BREAKER_COOLDOWN=0.2):
        turn_caching(True)
        yield server
    server.close()


def old_entry_survived(server: RedisServer, prefix: str, generation: int) -> bool:
    key = f"{prefix}:{generation}:v:ctx:m1.{CTX.shape}:{ORG_NUMBER}:{CALLER}"
    return server.client().exists(key) == 1


def wait_past_cooldown() -> None:
    threading.Event().wait(0.3)


def test_it_reads_an_update_made_while_redis_was_stopped(persistent_redis, cache_prefix):
    lead = warm_lead()
    generation = gate.switch.current().generation
    persistent_redis.stop()
    for _ in range(3):  # trip the breaker: from here on, invalidations are skipped
        services.call_context(ORG_NUMBER, "+15559990000")
    assert gate.breaker.state == "open"
    Lead.objects.filter(pk=lead["id"]).update(name="After")
    services.update_lead(lead["id"], sentiment="positive")
    persistent_redis.start()
    assert old_entry_survived(persistent_redis, cache_prefix, generation)
    wait_past_cooldown()
    assert cached_name() == "After"
    assert gate.breaker.state == "closed"
    # One new generation, for both reasons: another server process, and skipped writes.
    (audit,) = SwitchAudit.objects.filter(actor="system")
    assert audit.action == "reset"
    assert "the Redis server changed" in audit.reason
    assert "skipped their invalidations" in audit.reason


def test_it_reads_an_update_whose_invalidation_failed(persistent_redis, cache_prefix):
    lead = warm_lead()
    generation = gate.switch.current().generation
    persistent_redis.stop()
    services.update_lead(lead["id"], name="After")  # its invalidation fails: Redis is down
    assert SwitchAudit.objects.filter(action="lost").count() == 1
    persistent_redis.start()
    assert old_entry_survived(persistent_redis, cache_prefix, generation)
    wait_past_cooldown()
    assert cached_name() == "After"


def test_it_reads_an_update_made_while_redis_hung(persistent_redis, cache_prefix):
    lead = warm_lead()
    generation = gate.switch.current().generation
    persistent_redis.hang()
    for _ in range(3):  # three timeouts in a row open the breaker
        services.call_context(ORG_NUMBER, "+15559990000")
    assert gate.breaker.state == "open"
    services.update_lead(lead["id"], name="After")  # its invalidation is skipped
    persistent_redis.resume()
    assert old_entry_survived(persistent_redis, cache_prefix, generation)
    wait_past_cooldown()
    assert cached_name() == "After"


def test_it_does_not_store_a_row_read_before_a_write_committed(shared_redis, monkeypatch):
    """The read-populate race, made deterministic: the reader is paused between its database
    read and its cache store while a writer commits and invalidates."""
    turn_caching(True)
    org = make_org()
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    services.update_lead(lead["id"], name="Before")
    loaded, resume = threading.Event(), threading.Event()
    real_loader = reads.load_call_context

    def paused_loader(org_number, phone):
        context = real_loader(org_number, phone)
        loaded.set()
        assert resume.wait(10)
        return context

    monkeypatch.setattr(reads, "load_call_context", paused_loader)
    seen = {}

    def reader():
        try:
            seen["name"] = cached_name()
        finally:
            connection.close()

    thread = threading.Thread(target=reader)
    thread.start()
    assert loaded.wait(10)
    services.update_lead(lead["id"], name="After")  # commits, then invalidates
    resume.set()
    thread.join(10)
    monkeypatch.setattr(reads, "load_call_context", real_loader)

    assert seen["name"] == "Before"  # the reader answered with what it read: that is fine
    assert gate.stats.snapshot()["ctx"]["stale_stores_refused"] == 1  # but did not store it
    assert cached_name() == "After"
    assert cached_name() == "After"
    assert gate.stats.snapshot()["ctx"]["hits"] == 1


def test_it_keeps_the_cache_across_an_outage_in_which_nothing_was_written(
    persistent_redis, cache_prefix
):
    warm_lead()
    generation = gate.switch.current().generation
    persistent_redis.hang()
    for _ in range(3):
        services.call_context(ORG_NUMBER, "+15559990000")
    assert gate.breaker.state == "open"
    persistent_redis.resume()
    wait_past_cooldown()
    hits = gate.stats.snapshot()["ctx"]["hits"]
    assert cached_name() == "Before"
    assert gate.breaker.state == "closed"
    # No write was missed, so the cache stays warm: no new generation, a hit.
    assert gate.switch.current().generation == generation
    assert gate.stats.snapshot()["ctx"]["hits"] == hits + 1
