"""The cache modes every service answer must be identical in: on, switched off, Redis stopped,
hung, and evicting (a small maxmemory under allkeys-lru with filler traffic beside the app)."""

import contextlib
import threading
import time

import redis
from django.test import override_settings

from tests.conftest import turn_caching, using_redis
from tests.redis_servers import RedisServer

MODES = ["on", "off", "stopped", "hung", "evicting"]
# Long enough to tell "waited for the timeout" from "did not wait" on a noisy machine.
HUNG_SOCKET_TIMEOUT = 0.5


@contextlib.contextmanager
def cache_mode(mode: str, shared_url: str):
    """Caching on (shared Redis), switched off, Redis stopped (SIGTERM) or hung (SIGSTOP), or
    evicting (a private Redis kept full by filler keys)."""
    if mode in ("on", "off"):
        with using_redis(shared_url):
            turn_caching(mode == "on")
            yield None
        return
    if mode == "evicting":
        with evicting_redis() as server:
            yield server
        return
    server = RedisServer().start()
    try:
        with (
            using_redis(server.url, socket_timeout=HUNG_SOCKET_TIMEOUT),
            override_settings(REDIS_BREAKER_COOLDOWN=60),
        ):
            turn_caching(True)
            server.stop() if mode == "stopped" else server.hang()
            yield server
    finally:
        server.close()


@contextlib.contextmanager
def evicting_redis():
    server = RedisServer(args=("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")).start()
    stop = threading.Event()

    def fill():
        client, n = server.client(), 0
        while not stop.is_set():
            try:
                client.set(f"filler:{n}", b"x" * 20_000, ex=600)
            except redis.RedisError:
                pass
            n += 1
            time.sleep(0.002)

    filler = threading.Thread(target=fill, daemon=True)
    try:
        with using_redis(server.url), override_settings(REDIS_BREAKER_COOLDOWN=0.2):
            turn_caching(True)
            filler.start()
            yield server
    finally:
        stop.set()
        if filler.is_alive():
            filler.join(timeout=5)
        server.close()
