"""The cache-truth tests' helpers: what a private redis-server holds, the generation resets
the switch audited, and reading until the cache serves again."""

import time

from monitoring.cache import gate
from monitoring.models import SwitchAudit
from tests.leads.test_stale_data import cached_name
from tests.redis_servers import RedisServer


def value_keys(server: RedisServer, namespace: str) -> list[bytes]:
    return list(server.client().scan_iter(match=f"*:v:{namespace}:*"))


def resets() -> list[SwitchAudit]:
    return list(SwitchAudit.objects.filter(actor="system", action="reset"))


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
