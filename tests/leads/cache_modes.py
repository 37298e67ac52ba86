"""The four cache modes every service answer must be identical in."""

import contextlib

from django.test import override_settings

from tests.conftest import turn_caching, using_redis
from tests.redis_servers import RedisServer

MODES = ["on", "off", "stopped", "hung"]
# Long enough to tell "waited for the timeout" from "did not wait" on a noisy machine.
HUNG_SOCKET_TIMEOUT = 0.5


@contextlib.contextmanager
def cache_mode(mode: str, shared_url: str):
    """Caching on (shared Redis), switched off, Redis stopped (SIGTERM) or hung (SIGSTOP)."""
    if mode in ("on", "off"):
        with using_redis(shared_url):
            turn_caching(mode == "on")
            yield None
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
