"""The cache tells the truth when what it talks to stalls: a hung channel layer is never
waited on, and a run of short Redis stalls keeps the generation and the hit rate."""

import threading
import time

import pytest
from django.test import override_settings

from leads import services
from monitoring import events
from monitoring.cache import gate, switch
from tests.leads.test_stale_data import cached_name, warm_lead
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)


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
