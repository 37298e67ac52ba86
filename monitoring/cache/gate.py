"""The cache gate: the one way into the cache Redis.

Every cached read is `gate.get_or_load(namespace, key, loader, ttl)` and every write's cache
effect is `gate.invalidate(...)`, called on commit. The gate asks the switch whether caching is
on and the circuit breaker whether Redis is usable, prefixes every key with the switch's
generation, guards stores against the read-populate race, counts hits, misses, errors and Redis
latency per namespace, and never lets a Redis fault reach its caller: a failed read is a miss,
a failed store is skipped, a failed invalidation bumps the generation instead.
"""

import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.core.signals import setting_changed
from django.db import DatabaseError, connection
from redis.exceptions import RedisError

from monitoring import events
from monitoring.cache import scripts, switch
from monitoring.cache.breaker import CircuitBreaker
from monitoring.cache.stats import GateStats
from monitoring.metrics.recorder import PROCESS_ID
from monitoring.models import SwitchAudit

log = logging.getLogger(__name__)

T = TypeVar("T")
REDIS_FAULTS = (RedisError, OSError)
# Long enough that no token can expire while a reader is between its load and its store.
TOKEN_TTL = 86_400
_RESETTING_SETTINGS = {
    "CACHES",
    "REDIS_URL",
    "REDIS_ENABLED",
    "REDIS_BREAKER_FAILURES",
    "REDIS_BREAKER_COOLDOWN",
    "REDIS_KEY_PREFIX",
}


@dataclass(frozen=True)
class _Names:
    value: str
    token: str
    members: str | None


class CacheGate:
    def __init__(self) -> None:
        self.switch = switch.view
        self.stats = GateStats()
        self._client = None
        self._store_script = None
        self._invalidate_script = None
        self._breaker: CircuitBreaker | None = None
        self._fault_logged = False

    # --- reads ------------------------------------------------------------------------------

    def get_or_load(
        self,
        namespace: str,
        key: str,
        loader: Callable[[], T],
        ttl: int | Callable[[T], int] | None = None,
        group: str | None = None,
    ) -> T:
        """The cached value, or loader()'s, stored for next time. `ttl` may be a function of
        the value (for instance shorter for "not found"). With `group`, the entry is dropped by
        `invalidate(groups=[(namespace, group)])` along with every other member."""
        state = self._cache_state()
        if state is None:
            self.stats.count(namespace, "bypassed")
            return loader()
        names = self._names(state.generation, namespace, key, group)
        try:
            raw, token = self._call(namespace, self._redis().mget, names.value, names.token)
        except REDIS_FAULTS as exc:
            self._fault(namespace, exc)
            return loader()
        if raw is not None:
            try:
                value = pickle.loads(raw)
            except Exception:  # any undecodable entry (corrupt, or from other code) is a miss
                log.warning("cache: unreadable entry %s, reloading it", names.value)
            else:
                self.stats.count(namespace, "hits")
                return value
        self.stats.count(namespace, "misses")
        value = loader()
        self._store(namespace, names, token, value, _seconds(ttl, value))
        return value

    def _store(self, namespace: str, names: _Names, token: bytes | None, value: Any, ttl: int):
        if not self.breaker.allow():
            return
        keys = [names.value, names.token] + ([names.members] if names.members else [])
        args = [token or b"", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), ttl]
        try:
            stored = self._call(namespace, self._script("store"), keys=keys, args=args)
        except REDIS_FAULTS as exc:
            self._fault(namespace, exc)
            return
        self.stats.count(namespace, "stores" if stored else "stale_stores_refused")

    # --- writes -----------------------------------------------------------------------------

    def invalidate(
        self,
        keys: Iterable[tuple[str, str]] = (),
        groups: Iterable[tuple[str, str]] = (),
    ) -> set[tuple[str, str]]:
        """Drop entries (namespace, key) and every member of groups (namespace, group), in one
        round trip; returns the keys that held an entry. Call it on commit. Invalidations are
        sent even while caching is switched off at runtime: a process that has not yet seen the
        flip must not keep a stale entry."""
        keys, groups = list(keys), list(groups)
        if not (keys or groups):
            return set()
        if switch.environment_source() != switch.RUNTIME:
            self._note_skipped_invalidation()
            return set()
        if not self._redis_usable():
            # Redis cannot be told: the next process to cache bumps the generation first.
            self._note_skipped_invalidation()
            return set()
        # Read the generation afresh: another process may have bumped it since this process's
        # copy was refreshed, and entries stored since then live under the new one.
        generation = self.switch.refresh().generation
        redis_keys, kinds = self._invalidation_targets(generation, keys, groups)
        namespace = (keys or groups)[0][0]
        try:
            dropped = self._call(
                namespace, self._script("invalidate"), keys=redis_keys, args=[TOKEN_TTL, *kinds]
            )
        except REDIS_FAULTS as exc:
            self._fault(namespace, exc)
            self._bump_generation(
                SwitchAudit.Action.LOST, "a cache invalidation could not reach Redis"
            )
            return set()
        for ns, _ in keys + groups:
            self.stats.count(ns, "invalidations")
        return {keys[position - 1] for position in dropped}

    def refresh(
        self,
        namespace: str,
        key: str,
        loader: Callable[[], T],
        ttl: int | Callable[[T], int] | None = None,
    ) -> None:
        """Load an entry and store it now (write-through after an invalidation), so the next
        reader finds it warm. Guarded like any store: if another write invalidates the key
        while this loads, the loaded value is not stored."""
        state = self._cache_state()
        if state is None:
            return
        names = self._names(state.generation, namespace, key, None)
        try:
            token = self._call(namespace, self._redis().get, names.token)
        except REDIS_FAULTS as exc:
            self._fault(namespace, exc)
            return
        value = loader()
        self.stats.count(namespace, "refreshes")
        self._store(namespace, names, token, value, _seconds(ttl, value))

    def _invalidation_targets(self, generation, keys, groups) -> tuple[list[str], list[str]]:
        redis_keys: list[str] = []
        kinds: list[str] = []
        for namespace, key in keys:
            names = self._names(generation, namespace, key, None)
            redis_keys += [names.token, names.value]
            kinds.append("k")
        for namespace, group in groups:
            names = self._names(generation, namespace, "", group)
            redis_keys += [names.token, names.members]
            kinds.append("g")
        return redis_keys, kinds

    # --- the breaker and the connection -----------------------------------------------------

    @property
    def breaker(self) -> CircuitBreaker:
        if self._breaker is None:
            self._breaker = CircuitBreaker(
                settings.REDIS_BREAKER_FAILURES,
                settings.REDIS_BREAKER_COOLDOWN,
                on_change=self._breaker_changed,
            )
        return self._breaker

    def _cache_state(self) -> switch.SwitchState | None:
        """The switch state to read and store under, or None to answer from the database.
        Only a process that caches, with Redis usable, starts the new generation that writes
        which skipped their invalidations call for (a bystander bumping it would empty the
        cache over and over while another process's breaker is open)."""
        state = self.switch.current()
        if not state.enabled or not self._redis_usable():
            return None
        state = self.switch.current()  # a recovery probe may have bumped the generation
        if not state.stale_risk:
            return state
        # Inside a caller's transaction the bump could roll back: bypass until a later read.
        if connection.in_atomic_block:
            return None
        try:
            state = switch.resume_after_skipped_invalidations(state)
        except DatabaseError:
            return None
        self.switch.apply(state)
        return state

    def _redis_usable(self) -> bool:
        breaker = self.breaker
        if breaker.allow():
            return True
        # A probe must commit its generation bump before any read; inside a caller's
        # transaction it could not, so the probe waits for a caller outside one.
        if not breaker.probe_due() or connection.in_atomic_block or not breaker.try_start_probe():
            return False
        return self._probe()

    def _probe(self) -> bool:
        try:
            self._call("probe", self._redis().ping)
        except REDIS_FAULTS:
            self.breaker.probe_failed()
            return False
        # If writes skipped their invalidations during the outage (here or in any process),
        # nothing cached before it may be served after it: a new generation first.
        try:
            self.switch.apply(switch.resume_after_skipped_invalidations(switch.read_state()))
        except DatabaseError:
            log.error("cache: Redis is back but the switch cannot be read; staying open")
            self.breaker.probe_failed()
            return False
        self.breaker.close()
        return True

    def _note_skipped_invalidation(self) -> None:
        try:
            switch.note_skipped_invalidation()
        except DatabaseError:
            log.error("cache: an invalidation was skipped and could not be noted")

    def _bump_generation(self, action: str, reason: str) -> bool:
        try:
            switch.bump_generation(actor="system", reason=reason, source="system", action=action)
        except DatabaseError:
            log.error("cache: could not bump the generation (%s); database unreachable", reason)
            return False
        return True

    def _call(self, namespace: str, fn: Callable[..., T], *args, **kwargs) -> T:
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        finally:
            self.stats.redis_call(namespace, time.perf_counter() - started)
        self.breaker.record_success()
        self._fault_logged = False
        return result

    def _fault(self, namespace: str, exc: BaseException) -> None:
        self.stats.count(namespace, "errors")
        # A timeout counts like any other failure: one slow answer on a busy host must not
        # empty every process's cache; REDIS_BREAKER_FAILURES in a row open the breaker.
        self.breaker.record_failure()
        if not self._fault_logged:
            self._fault_logged = True
            log.warning(
                "cache: Redis fault (%s: %s); serving from the database", type(exc).__name__, exc
            )

    def _breaker_changed(self, old: str, new: str) -> None:
        self.stats.breaker_changed(time.time(), old, new)
        log.warning("cache: circuit breaker %s -> %s", old, new)
        # Told to the dashboards off the caller's thread: a request never waits on the layer.
        event = {"from": old, "to": new, "process": PROCESS_ID}
        threading.Thread(
            target=events.publish, args=("breaker.changed", event), daemon=True
        ).start()

    def _redis(self):
        if self._client is None:
            from django_redis import get_redis_connection

            self._client = get_redis_connection("redis")
        return self._client

    def _script(self, name: str):
        if name == "store":
            if self._store_script is None:
                self._store_script = self._redis().register_script(scripts.GUARDED_STORE)
            return self._store_script
        if self._invalidate_script is None:
            self._invalidate_script = self._redis().register_script(scripts.INVALIDATE)
        return self._invalidate_script

    def _names(self, generation: int, namespace: str, key: str, group: str | None) -> _Names:
        base = f"{settings.REDIS_KEY_PREFIX}:{generation}"
        if group is None:
            return _Names(f"{base}:v:{namespace}:{key}", f"{base}:t:{namespace}:{key}", None)
        return _Names(
            f"{base}:v:{namespace}:{key}",
            f"{base}:t:{namespace}:g:{group}",
            f"{base}:m:{namespace}:{group}",
        )

    # --- observing the server ----------------------------------------------------------------

    def sample_server(self) -> dict:
        """PING latency and the INFO figures of the cache Redis, for health checks and the alert
        evaluator. Sent whatever the breaker says (it is how an outage's end is seen), bounded
        by the socket timeout, and never raises."""
        if switch.environment_source() == switch.UNCONFIGURED:
            return {"configured": False, "connected": False}
        try:
            client = self._redis()
            started = time.perf_counter()
            client.ping()
            latency = time.perf_counter() - started
            info = client.info()
        except REDIS_FAULTS as exc:
            return {"configured": True, "connected": False, "error": f"{type(exc).__name__}: {exc}"}
        return {
            "configured": True,
            "connected": True,
            "latency_ms": round(latency * 1000, 3),
            **server_figures(info),
        }

    # --- status and lifecycle ---------------------------------------------------------------

    def status(self) -> dict:
        state = self.switch.current()
        return {
            **state.as_dict(),
            "breaker": self.breaker.state,
            "seconds_until_probe": round(self.breaker.seconds_until_probe(), 3),
        }

    def flush(self, *, actor: str, reason: str, source: str) -> switch.SwitchState:
        return switch.bump_generation(actor=actor, reason=reason, source=source)

    def reset(self) -> None:
        """Forget the connection, breaker, switch copy and counters (settings changed; tests)."""
        self._client = self._store_script = self._invalidate_script = None
        self._breaker = None
        self._fault_logged = False
        self.switch.forget()
        self.stats.reset()

    def connect_signals(self) -> None:
        setting_changed.connect(self._on_setting_changed, dispatch_uid="opsdash-cache-gate")

    def _on_setting_changed(self, *, setting: str, **kwargs) -> None:
        if setting in _RESETTING_SETTINGS:
            self.reset()


def _seconds(ttl, value) -> int:
    if callable(ttl):
        ttl = ttl(value)
    return ttl or settings.CACHE_DEFAULT_TTL


def server_figures(info: dict) -> dict:
    used, maximum = info.get("used_memory", 0), info.get("maxmemory", 0)
    return {
        "version": info.get("redis_version", ""),
        "used_memory_bytes": used,
        "max_memory_bytes": maximum,
        "memory_ratio": round(used / maximum, 4) if maximum else None,
        "maxmemory_policy": info.get("maxmemory_policy", ""),
        "evicted_keys": info.get("evicted_keys", 0),
        "connected_clients": info.get("connected_clients", 0),
        "ops_per_second": info.get("instantaneous_ops_per_sec", 0),
    }


gate = CacheGate()
