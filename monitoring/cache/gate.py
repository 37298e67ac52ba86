"""The cache gate: the one way into the cache Redis.

Every cached read is `gate.get_or_load(namespace, key, loader, scopes=...)` and every write's
cache effect is `gate.invalidate(scopes=...)`, called on commit. The gate asks the switch
whether caching is on and the circuit breaker whether Redis is usable, names every key with the
switch's generation, serves an entry only while every scope it depends on still has the token it
was stored under, guards stores against the read-populate race, counts hits, misses, errors and
Redis latency per namespace, and never lets a Redis fault reach its caller: a failed read is a
miss, a failed store is skipped, a lost invalidation starts a new generation.

It also never trusts that Redis still holds what it was told. Each generation has a marker key
in Redis (its value is kept in the database); every read fetches it with the entry, and every
new connection asks the server's run id. A server that is not the one the generation was started
on (restarted from a snapshot, a promoted replica) or that lost the marker (flushed, evicted,
restarted empty) gets a new generation, audited, before anything is read from it.
"""

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.signals import setting_changed
from django.db import DatabaseError, close_old_connections, connection, transaction
from redis.exceptions import RedisError

import monitoring.cache.entries as entries
import monitoring.cache.scripts as scripts
import monitoring.cache.switch as switch
from monitoring import events
from monitoring.cache.breaker import CircuitBreaker
from monitoring.cache.connection import async_client, identity_of
from monitoring.cache.entries import Namespace, as_namespace, nonces
from monitoring.cache.stats import GateStats
from monitoring.identity import PROCESS_ID
from monitoring.models import SwitchAudit

log = logging.getLogger(__name__)

T = TypeVar("T")
REDIS_FAULTS = (RedisError, OSError)
# Scope tokens outlive the entries that depend on them (a token that expires first only turns
# a hit into a miss).
TOKEN_TTL = 86_400
ANY_GENERATION = -1
# What an asynchronous read found (see aget_or_load).
HIT, MISS, FAULT, UNCHECKED = "hit", "miss", "fault", "unchecked"
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
    marker: str
    scopes: list[str]


class CacheGate:
    def __init__(self) -> None:
        self.switch = switch.view
        self.stats = GateStats()
        self._client = None
        # One asyncio client per event loop (a connection belongs to the loop that opened it).
        self._async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._scripts: dict[str, Any] = {}
        self._breaker: CircuitBreaker | None = None
        self._fault_logged = False
        self._verify_lock = threading.Lock()
        # Nothing read from Redis is trusted before the server has been checked once.
        self._needs_verify = True
        # The generation of a lost invalidation whose new generation could not be recorded:
        # until it is, this process does not cache.
        self._owed_bump: int | None = None

    # --- reads ------------------------------------------------------------------------------

    def get_or_load(
        self,
        namespace: Namespace | str,
        key: str,
        loader: Callable[[], T],
        ttl: int | Callable[[T], int] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> T:
        """The cached value, or loader()'s, stored for next time. The entry is served only
        until one of its `scopes` is invalidated (default: its own key). `ttl` (else the
        namespace's) may be a function of the value, for instance shorter for "not found"."""
        namespace = as_namespace(namespace)
        state = self._cache_state()
        if state is None:
            self.stats.count(namespace.name, "bypassed")
            return loader()
        names = self._names(state.generation, namespace, key, scopes)
        found = self._read(namespace.name, state, names)
        if found is None:
            return loader()
        raw, tokens = found
        if raw is not None:
            entry = entries.decode(raw)
            if entry is not None and None not in tokens and entry[0] == tokens:
                self.stats.count(namespace.name, "hits")
                return entry[1]
            if entry is None:
                log.warning("cache: unreadable entry %s, reloading it", names.value)
        self.stats.count(namespace.name, "misses")
        return self._load_and_store(namespace, names, state, tokens, loader, ttl)

    async def aget_or_load(
        self,
        namespace: Namespace | str,
        key: str,
        loader: Callable[[], T],
        ttl: int | Callable[[T], int] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> T:
        """`get_or_load` for a caller on the event loop. A hit is one asyncio round trip on
        the loop, no thread; everything else (caching off, a server or generation to check, a
        miss and its store) is `get_or_load`'s, in a worker thread; after a Redis fault the
        loader's alone (one timeout per read, not two)."""
        namespace = as_namespace(namespace)
        try:
            found, value = await self._read_on_loop(namespace, key, scopes)
        except Exception:  # a bug here must not cost the caller its answer: the threads' path
            log.exception("cache: the event-loop read failed; reading through a worker thread")
            found, value = UNCHECKED, None
        if found == HIT:
            return value
        if found == FAULT:
            return await _in_worker(loader)
        if found == MISS:
            names, state, tokens = value
            return await _in_worker(self._missed, namespace, names, state, tokens, loader, ttl)
        return await _in_worker(self.get_or_load, namespace, key, loader, ttl, scopes)

    async def _read_on_loop(self, namespace: Namespace, key: str, scopes) -> tuple[str, Any]:
        """(HIT, value), (MISS, what the store needs), (FAULT, None), or (UNCHECKED, None)
        when the read needs what only the threads' path does (a check, a probe, the database)."""
        state = self._trusted_state_unread()
        if state is None:
            return UNCHECKED, None
        names = self._names(state.generation, namespace, key, scopes)
        client = self._async_redis()
        breaker, started, clock = self.breaker, time.perf_counter(), self.breaker.now()
        try:
            raw, marker, *tokens = await client.mget(names.value, names.marker, *names.scopes)
        except REDIS_FAULTS as exc:
            breaker.record_failure(started_at=clock)
            self._fault(namespace.name, exc)
            return FAULT, None
        finally:
            self.stats.redis_call(namespace.name, time.perf_counter() - started)
        breaker.record_success()
        self._fault_logged = False
        if not await self._async_trusts(client, marker, state):
            self.stats.count(namespace.name, "unverified")
            return UNCHECKED, None
        if raw is not None:
            entry = entries.decode(raw)
            if entry is not None and None not in tokens and entry[0] == tokens:
                self.stats.count(namespace.name, "hits")
                return HIT, entry[1]
        return MISS, (names, state, tokens)

    def _missed(self, namespace: Namespace, names, state, tokens, loader, ttl):
        self.stats.count(namespace.name, "misses")
        return self._load_and_store(namespace, names, state, tokens, loader, ttl)

    def _trusted_state_unread(self) -> switch.SwitchState | None:
        """The switch state when a read may be served without a check (`_cache_state`'s every
        condition, without its database reads, probes and checks), else None."""
        state = self.switch.current_unread()
        if (
            state is None
            or not state.enabled
            or not self._copy_is_fresh()
            or not self.breaker.allow()
            or self._owed_bump is not None
            or self._needs_verify
            or state.stale_risk
            or state.marked_generation != state.generation
        ):
            return None
        identity = identity_of(self._redis())
        if state.server_id != identity.trusted or identity.changed:
            return None
        return state

    async def _async_trusts(self, client, marker: bytes | None, state) -> bool:
        """The entry came from the server the gate verified, under this generation's marker.
        A connection to any other server is closed (the threads' check decides about it)."""
        identity = identity_of(client)
        if identity.trusted != state.server_id:
            identity.trust(state.server_id)
        if identity.changed:
            await client.connection_pool.disconnect()
            identity.forget_seen()
            return False
        if marker != state.marker.encode():
            self._needs_verify = True
            return False
        return True

    def refresh(
        self,
        namespace: Namespace | str,
        key: str,
        loader: Callable[[], T],
        ttl: int | Callable[[T], int] | None = None,
        scopes: Iterable[str] | None = None,
        only_if_cached: bool = True,
    ) -> None:
        """Load an entry and store it now (write-through after an invalidation), so the next
        reader finds it warm; by default only if an entry (even a stale one) was there, that
        is, only if it is in use. Guarded like any store."""
        namespace = as_namespace(namespace)
        state = self._cache_state()
        if state is None:
            return
        names = self._names(state.generation, namespace, key, scopes)
        found = self._read(namespace.name, state, names)
        if found is None or (only_if_cached and found[0] is None):
            return
        self.stats.count(namespace.name, "refreshes")
        self._load_and_store(namespace, names, state, found[1], loader, ttl)

    def _read(self, namespace: str, state, names: _Names):
        """(raw entry or None, scope tokens) from one MGET, or None when nothing read may be
        trusted (a fault, or a server or generation that must be checked first)."""
        try:
            raw, marker, *tokens = self._call(
                namespace, self._redis().mget, names.value, names.marker, *names.scopes
            )
        except REDIS_FAULTS as exc:
            self._fault(namespace, exc)
            return None
        if not self._trusts(marker, state):
            # Another server behind the address, or this generation's marker is gone (a
            # flush, a restart, another process's new generation): check before any use.
            self._needs_verify = True
            self.stats.count(namespace, "unverified")
            return None
        return raw, tokens

    def _trusts(self, marker: bytes | None, state) -> bool:
        return not identity_of(self._redis()).changed and marker == state.marker.encode()

    def _load_and_store(self, namespace: Namespace, names, state, tokens, loader, ttl):
        if None in tokens:
            tokens = self._ensure_tokens(namespace.name, names, tokens)
        value = loader()
        if tokens is not None:
            self._store(
                namespace, names, state.marker, tokens, value, _seconds(namespace, ttl, value)
            )
        return value

    def _ensure_tokens(self, namespace: str, names: _Names, tokens: list):
        """Missing scope tokens are created before loading, so a write after the load is seen."""
        fresh = [nonces.next() for _ in names.scopes]
        try:
            return self._call(
                namespace,
                self._script("ensure_tokens"),
                keys=names.scopes,
                args=[TOKEN_TTL, *fresh],
            )
        except REDIS_FAULTS as exc:
            self._fault(namespace, exc)
            return None

    def _store(self, namespace: Namespace, names, marker: str, tokens, value, ttl: int) -> None:
        try:
            payload = entries.encode(tokens, value)
        except entries.Unstorable as exc:
            self.stats.count(namespace.name, "unstorable")
            log.warning("cache: %s entry is not plain data, not stored: %s", namespace.name, exc)
            return
        if connection.in_atomic_block:
            # Read inside a transaction that may yet roll back: stored only once it commits
            # (the guard then still refuses it if a write has invalidated it meanwhile).
            transaction.on_commit(
                lambda: self._guarded_store(namespace.name, names, marker, tokens, payload, ttl),
                robust=True,
            )
            return
        self._guarded_store(namespace.name, names, marker, tokens, payload, ttl)

    def _guarded_store(self, namespace: str, names, marker, tokens, payload, ttl) -> None:
        if not self.breaker.allow():
            return
        keys = [names.value, names.marker, *names.scopes]
        try:
            stored = self._call(
                namespace, self._script("store"), keys=keys, args=[payload, ttl, marker, *tokens]
            )
        except REDIS_FAULTS as exc:
            self._fault(namespace, exc)
            return
        self.stats.count(namespace, "stores" if stored else "stale_stores_refused")

    # --- writes -----------------------------------------------------------------------------

    def invalidate(
        self, scopes: Iterable[str] = (), keys: Iterable[tuple[Namespace | str, str]] = ()
    ) -> None:
        """Make stale every entry that depends on one of `scopes` (and the entries `keys`, for
        entries kept under their own key), in one round trip. Call it on commit. Sent even
        while caching is switched off at runtime: a process that has not yet seen the flip must
        not keep serving a stale entry. An invalidation that cannot be sent is recorded (the
        next process to cache starts a new generation first) or, when it may have been lost,
        answered with a new generation at once."""
        scopes = list(scopes) + [_own_scope(as_namespace(ns), key) for ns, key in keys]
        if not scopes:
            return
        if switch.environment_source() != switch.RUNTIME or not self._redis_usable():
            self._note_skipped_invalidation()
            return
        self._pay_owed_bump()
        try:
            # The generation read afresh: another process may have started a new one since
            # this process's copy was refreshed, and entries stored since live under it.
            generation = self.switch.refresh().generation
        except DatabaseError:
            self._note_skipped_invalidation()
            return
        names = [entries.scope_name(settings.REDIS_KEY_PREFIX, generation, s) for s in scopes]
        label = scopes[0].split(":", 1)[0]
        if not self._replace_tokens(label, names):
            self._lost_invalidation(generation)
            return
        for scope in scopes:
            self.stats.count(scope.split(":", 1)[0], "invalidations")

    def invalidation_failed(self) -> None:
        """An invalidation that could not even be attempted (a bug, a failure before it was
        sent): the whole cache is made stale instead."""
        self._lost_invalidation(None)

    def _replace_tokens(self, label: str, names: list[str]) -> bool:
        """Sent twice at most: one stall of a busy server must not cost every process its cache
        (replacing tokens is idempotent, so a second try is safe)."""
        for attempt in (1, 2):
            fresh = [nonces.next() for _ in names]
            try:
                self._call(
                    label, self._script("replace_tokens"), keys=names, args=[TOKEN_TTL, *fresh]
                )
                return True
            except REDIS_FAULTS as exc:
                self._fault(label, exc)
                if attempt == 2 or not self.breaker.allow():
                    return False
        return False

    def _lost_invalidation(self, generation: int | None) -> None:
        try:
            switch.bump_generation(
                actor="system",
                reason="a cache invalidation could not reach Redis",
                source="system",
                action=SwitchAudit.Action.LOST,
                if_generation=generation,
            )
        except DatabaseError:
            log.error("cache: an invalidation was lost and the new generation cannot be recorded")
            self._owed_bump = ANY_GENERATION if generation is None else generation

    def _pay_owed_bump(self) -> bool:
        owed = self._owed_bump
        if owed is None:
            return True
        try:
            switch.bump_generation(
                actor="system",
                reason="a cache invalidation could not reach Redis (recorded late)",
                source="system",
                action=SwitchAudit.Action.LOST,
                if_generation=None if owed == ANY_GENERATION else owed,
            )
        except DatabaseError:
            return False
        self._owed_bump = None
        return True

    def _note_skipped_invalidation(self) -> None:
        try:
            switch.note_skipped_invalidation()
        except DatabaseError:
            log.error("cache: an invalidation was skipped and could not be noted")
            known = self.switch.known()
            self._owed_bump = known.generation if known is not None else ANY_GENERATION
        # A probe may have closed the breaker after this write found it open: look again
        # before the next read in this process.
        self._needs_verify = True

    # --- trust: the breaker, the server, the generation -------------------------------------

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
        """The switch state to read and store under, or None to answer from the database."""
        state = self.switch.current()
        if not state.enabled or not self._copy_is_fresh() or not self._redis_usable():
            return None
        if self._owed_bump is not None:
            if not self._pay_owed_bump():
                return None
            state = self.switch.current()  # the bump just paid started a new generation
        identity = identity_of(self._redis())
        if (
            self._needs_verify
            or state.stale_risk
            or state.marked_generation != state.generation
            or state.server_id != identity.trusted
            or identity.changed
        ):
            return self._verify()
        return state

    def _copy_is_fresh(self) -> bool:
        """A copy of the switch the database has not confirmed for a long while (its refresher
        stuck or the database unreachable) may miss a flip or a new generation: not trusted."""
        return self.switch.age() <= max(3.0, 6 * settings.SWITCH_REFRESH_SECONDS)

    def _verify(self) -> switch.SwitchState | None:
        """Check the server and the generation against the database (see switch.
        reconcile_server), starting a new generation if they disagree. One thread at a time;
        the others answer from the database meanwhile. Inside a caller's transaction the new
        generation is seen by other processes once it commits (they wait on the row's lock), and
        stores made under it wait for the commit too; if it rolls back, the marker it planted is
        one the row does not know, and the next check starts yet another generation."""
        if not self._verify_lock.acquire(blocking=False):
            return None
        try:
            client = self._redis()
            identity = identity_of(client)
            client.connection_pool.disconnect(inuse_connections=False)
            run_id = self._call("verify", client.info, "server")["run_id"]
            check = switch.ServerCheck(run_id, self._marker_of)
            state = switch.reconcile_server(
                check, recent_seconds=settings.REDIS_SERVER_SETTLE_SECONDS
            )
        except REDIS_FAULTS as exc:
            self._fault("verify", exc)
            return None
        except DatabaseError:
            log.error("cache: the switch cannot be read to check the Redis server; not caching")
            return None
        finally:
            self._verify_lock.release()
        if state is None:
            log.warning("cache: Redis server %s is not the one in use; not caching", run_id[:12])
            return None
        identity.trust(run_id)
        self.switch.apply(state)
        self._needs_verify = False
        return state if state.marked_generation == state.generation else None

    def _marker_of(self, generation: int) -> str | None:
        name = entries.marker_name(settings.REDIS_KEY_PREFIX, generation)
        value = self._call("verify", self._redis().get, name)
        return value.decode() if value is not None else None

    def plant_generation(self, old: int, new: int) -> str | None:
        """Inside the transaction that starts generation `new`: retire `old`'s marker (every
        process reading under it turns to the database at once) and plant `new`'s. Returns the
        new marker, or None when Redis cannot be told now (the first process to cache plants
        it later)."""
        if (
            switch.environment_source() == switch.UNCONFIGURED
            or "redis" not in settings.CACHES
            or self.breaker.failing
        ):
            return None
        prefix = settings.REDIS_KEY_PREFIX
        value = nonces.next().decode()
        pipe = self._redis().pipeline(transaction=False)
        if old:
            pipe.delete(entries.marker_name(prefix, old))
        pipe.set(entries.marker_name(prefix, new), value)
        try:
            self._call("marker", pipe.execute)
        except REDIS_FAULTS as exc:
            self._fault("marker", exc)
            return None
        return value

    def _redis_usable(self) -> bool:
        breaker = self.breaker
        if breaker.allow():
            return True
        if not breaker.probe_due() or connection.in_atomic_block or not breaker.try_start_probe():
            return False
        return self._probe()

    def _probe(self) -> bool:
        try:
            self._call("probe", self._redis().ping)
        except REDIS_FAULTS:
            self.breaker.probe_failed()
            return False
        # Closed first, so that writes from now on reach Redis; then nothing is read before
        # the switch (with every skip noted until now) and the server have been checked.
        self._needs_verify = True
        self.breaker.close()
        return True

    def _call(self, namespace: str, fn: Callable[..., T], *args, **kwargs) -> T:
        breaker = self.breaker
        started, clock = time.perf_counter(), breaker.now()
        try:
            result = fn(*args, **kwargs)
        except REDIS_FAULTS:
            breaker.record_failure(started_at=clock)
            raise
        finally:
            self.stats.redis_call(namespace, time.perf_counter() - started)
        breaker.record_success()
        self._fault_logged = False
        return result

    def _fault(self, namespace: str, exc: BaseException) -> None:
        self.stats.count(namespace, "errors")
        if not self._fault_logged:
            self._fault_logged = True
            log.warning(
                "cache: Redis fault (%s: %s); serving from the database", type(exc).__name__, exc
            )

    def _breaker_changed(self, old: str, new: str) -> None:
        self.stats.breaker_changed(time.time(), old, new)
        log.warning("cache: circuit breaker %s -> %s", old, new)
        events.publish("breaker.changed", {"from": old, "to": new, "process": PROCESS_ID})

    def _redis(self):
        if self._client is None:
            from django_redis import get_redis_connection

            self._client = get_redis_connection("redis")
        return self._client

    def _async_redis(self):
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = async_client(settings.CACHES["redis"])
        return client

    def _script(self, name: str):
        script = self._scripts.get(name)
        if script is None:
            source = {
                "store": scripts.GUARDED_STORE,
                "ensure_tokens": scripts.ENSURE_TOKENS,
                "replace_tokens": scripts.REPLACE_TOKENS,
            }[name]
            script = self._scripts[name] = self._redis().register_script(source)
        return script

    def _names(self, generation: int, namespace: Namespace, key: str, scopes) -> _Names:
        prefix = settings.REDIS_KEY_PREFIX
        scopes = list(scopes) if scopes is not None else [_own_scope(namespace, key)]
        return _Names(
            entries.value_name(prefix, generation, namespace, key),
            entries.marker_name(prefix, generation),
            [entries.scope_name(prefix, generation, scope) for scope in scopes],
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
        self._client = None
        self._async_clients = weakref.WeakKeyDictionary()
        self._scripts = {}
        self._breaker = None
        self._fault_logged = False
        self._needs_verify = True
        self._owed_bump = None
        self.switch.forget()
        self.stats.reset()

    def connect_signals(self) -> None:
        setting_changed.connect(self._on_setting_changed, dispatch_uid="opsdash-cache-gate")

    def _on_setting_changed(self, *, setting: str, **kwargs) -> None:
        if setting in _RESETTING_SETTINGS:
            self.reset()


async def _in_worker(fn: Callable[..., T], *args) -> T:
    """`fn(*args)` in a worker thread, whose database connection goes back afterwards."""

    def run() -> T:
        try:
            return fn(*args)
        finally:
            close_old_connections()

    return await sync_to_async(run, thread_sensitive=False)()


def _own_scope(namespace: Namespace, key: str) -> str:
    return f"{namespace.name}:{key}"


def _seconds(namespace: Namespace, ttl, value) -> int:
    ttl = ttl if ttl is not None else namespace.ttl
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
        "run_id": info.get("run_id", ""),
        "role": info.get("role", ""),
    }


gate = CacheGate()
switch.on_new_generation(gate.plant_generation)
