"""Connection diagnostics for the cache Redis (`manage.py redis_check`, `redis_validate`).

Part of the gate package because only this package talks to Redis, but apart from the gate:
each check builds its own short-lived client from a URL (the process's gate, its pooled
client, breaker and counters are never touched), and names what went wrong instead of hiding
it as a miss. `check_connection` never raises for a Redis, network or URL fault: it returns
the cause. `IsolatedGate` is a private gate, for showing the fallback against a dead Redis;
`caching_on_in_this_process` lets a validation run cache before the switch is turned on.
"""

import socket
import ssl
import statistics
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout
from redis.retry import Retry

from monitoring.cache.breaker import CircuitBreaker
from monitoring.cache.gate import CacheGate, gate, server_figures
from monitoring.cache.switch import (
    RUNTIME,
    SwitchState,
    SwitchUnavailable,
    read_state,
    why_unavailable,
)
from monitoring.redaction import masked_url
from monitoring.sentinel_urls import is_sentinel_url, parse_sentinel_url

# Causes, named for people reading a runbook: "<cause>: <what to do>".
NOT_CONFIGURED = "no REDIS_URL configured"
BAD_URL = "invalid URL"
WRONG_PASSWORD = "wrong password"
PASSWORD_REQUIRED = "password required"
TLS_MISMATCH = "TLS mismatch"
TLS_CERTIFICATE = "TLS certificate not trusted"
TLS_ERROR = "TLS error"
REFUSED = "connection refused"
NO_SOCKET = "no socket"
TIMEOUT = "timeout"
UNKNOWN_HOST = "unknown host"
READ_ONLY = "read-only replica"
OUT_OF_MEMORY = "out of memory"
NO_PERMISSION = "no permission"
SERVER_ERROR = "server error"
CONNECTION_LOST = "connection lost"
NO_PRIMARY = "no primary"

DEFAULT_PORT = 6379
# A diagnosis probe (is it TLS? is it plain Redis?) runs after a failure, so it can afford to
# wait longer than the app's tens of milliseconds for an answer.
PROBE_TIMEOUT = 0.5
ROUND_TRIP_TTL_MS = 60_000


@dataclass(frozen=True)
class CheckResult:
    """What a connection check found. `url` is masked (never the password)."""

    url: str
    ok: bool
    transport: str = ""
    connect_timeout: float = 0.0
    socket_timeout: float = 0.0
    cause: str = ""
    diagnosis: str = ""
    connect_ms: float | None = None
    latency_ms: float | None = None
    pings: int = 0
    server: dict = field(default_factory=dict)
    server_note: str = ""
    round_trip_key: str = ""
    round_trip_ms: float | None = None
    # Under Sentinel: what the sentinels say (see sentinel_topology); {} otherwise.
    topology: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class _Failed(Exception):
    """A step failed with a cause already named (a write refused by the server)."""

    def __init__(self, cause: str, diagnosis: str) -> None:
        super().__init__(diagnosis)
        self.cause = cause
        self.diagnosis = diagnosis


def check_connection(url: str | None, timeout: float | None = None, pings: int = 5) -> CheckResult:
    """Connect to `url`, PING it `pings` times, read INFO, and SET/GET/DEL a throwaway key under
    REDIS_KEY_PREFIX. `timeout` (seconds) replaces both configured timeouts (default:
    REDIS_CONNECT_TIMEOUT and REDIS_SOCKET_TIMEOUT, what the app itself waits)."""
    connect_timeout = timeout or settings.REDIS_CONNECT_TIMEOUT
    socket_timeout = timeout or settings.REDIS_SOCKET_TIMEOUT
    base = {"connect_timeout": connect_timeout, "socket_timeout": socket_timeout}
    if not url:
        return CheckResult(
            url="",
            ok=False,
            cause=NOT_CONFIGURED,
            diagnosis=f"{NOT_CONFIGURED}: caching is off and there is no Redis to check "
            "(set REDIS_URL=redis://host:6379/0, or rediss://... for TLS)",
            **base,
        )
    shown = masked_url(url)
    base.update(url=shown, transport=describe_transport(url))
    if is_sentinel_url(url):
        return _check_under_sentinel(url, pings, base)
    try:
        client = _short_lived_client(url, connect_timeout, socket_timeout)
    except ValueError as exc:
        return CheckResult(ok=False, cause=BAD_URL, diagnosis=f"{BAD_URL}: {exc}", **base)
    try:
        return CheckResult(ok=True, **base, **_exercise(client, pings))
    except _Failed as failed:
        return CheckResult(ok=False, cause=failed.cause, diagnosis=failed.diagnosis, **base)
    except (RedisError, OSError) as exc:
        cause, diagnosis = diagnose(url, exc, max(connect_timeout, socket_timeout))
        return CheckResult(ok=False, cause=cause, diagnosis=diagnosis, **base)
    finally:
        client.close()


def _check_under_sentinel(url: str, pings: int, base: dict) -> CheckResult:
    """Ask the sentinels for the primary (and the topology), then check the primary as any
    other server."""
    try:
        config = parse_sentinel_url(url)
    except ValueError as exc:
        return CheckResult(ok=False, cause=BAD_URL, diagnosis=f"{BAD_URL}: {exc}", **base)
    topology = sentinel_topology(config, max(base["connect_timeout"], base["socket_timeout"]))
    if not topology["primary"]:
        return CheckResult(
            ok=False,
            cause=NO_PRIMARY,
            diagnosis=_no_primary(config, topology),
            topology=topology,
            **base,
        )
    found = check_connection(primary_url(config, topology["primary"]), None, pings)
    return replace(found, url=base["url"], transport=base["transport"], topology=topology)


def _no_primary(config: dict, topology: dict) -> str:
    answered = [s for s in topology["sentinels"] if s["answered"]]
    if not answered:
        return (
            f"{NO_PRIMARY}: none of the sentinels {_addresses(config['sentinels'])} answered "
            "(down, wrong port, or REDIS_SENTINEL_PASSWORD wrong)"
        )
    return (
        f"{NO_PRIMARY}: {len(answered)} of {len(topology['sentinels'])} sentinels answered but "
        f"none names a usable primary of {config['service']!r} (a failover under way, the "
        "service name wrong, or the primary down and no quorum to replace it)"
    )


def primary_url(config: dict, address: str) -> str:
    credentials = ""
    if config["password"]:
        credentials = f"{config['username'] or ''}:{config['password']}@"
    return f"redis://{credentials}{address}/{config['db']}"


def _addresses(sentinels) -> str:
    return ", ".join(f"{host}:{port}" for host, port in sentinels)


def sentinel_topology(config: dict, timeout: float) -> dict:
    """What the sentinels of `config` say of its service: each sentinel (answered or its
    error; the primary it names; its flags), the quorum, the primary that a majority of those
    that answered name (none while they disagree or name one that is down), its replicas with
    their lag, and its clients against maxclients. Never raises."""
    sentinels = [
        _ask_sentinel(host, port, config["service"], timeout) for host, port in config["sentinels"]
    ]
    named = [s["primary"] for s in sentinels if s.get("primary") and s.get("usable")]
    primary = max(set(named), key=named.count) if named else ""
    if named and named.count(primary) * 2 <= len([s for s in sentinels if s["answered"]]):
        primary = ""
    quorum = next((s["quorum"] for s in sentinels if s.get("quorum")), None)
    topology = {
        "service": config["service"],
        "sentinels": sentinels,
        "sentinels_answered": sum(s["answered"] for s in sentinels),
        "quorum": quorum,
        "primary": primary,
        "replicas": [],
        "connected_clients": None,
        "maxclients": None,
    }
    if primary:
        topology.update(_primary_figures(config, primary, timeout))
    return topology


def _ask_sentinel(host: str, port: int, service: str, timeout: float) -> dict:
    entry = {"address": f"{host}:{port}", "answered": False}
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if settings.REDIS_SENTINEL_PASSWORD:
        options["password"] = settings.REDIS_SENTINEL_PASSWORD
    client = redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), **options)
    try:
        state = client.sentinel_master(service)
    except (RedisError, OSError) as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["answered"] = not isinstance(exc, (redis.ConnectionError, RedisTimeout, OSError))
        return entry
    finally:
        client.close()
    entry.update(
        answered=True,
        primary=f"{state['ip']}:{state['port']}",
        usable=state["is_master"] and not (state["is_sdown"] or state["is_odown"]),
        flags=state["flags"],
        quorum=state.get("quorum"),
        other_sentinels=state.get("num-other-sentinels"),
        replicas=state.get("num-slaves"),
    )
    return entry


def _primary_figures(config: dict, primary: str, timeout: float) -> dict:
    """The primary's replicas (their link and lag) and clients, from its INFO."""
    client = _short_lived_client(primary_url(config, primary), timeout, timeout)
    try:
        info = client.info()
    except (RedisError, OSError) as exc:
        return {"primary_error": f"{type(exc).__name__}: {exc}"}
    finally:
        client.close()
    offset = info.get("master_repl_offset", 0)
    replicas = [
        {
            "address": f"{value['ip']}:{value['port']}",
            "state": value.get("state", ""),
            "lag_seconds": value.get("lag"),
            "lag_bytes": max(0, offset - int(value.get("offset", 0))),
        }
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and "ip" in value
    ]
    return {
        "primary_role": info.get("role", ""),
        "primary_run_id": info.get("run_id", ""),
        "replicas": replicas,
        "connected_clients": info.get("connected_clients"),
        "maxclients": info.get("maxclients"),
    }


def describe_topology(topology: dict) -> list[tuple[str, str]]:
    """(label, text) lines for people: the sentinels, quorum, primary, replicas, clients."""
    answered = topology["sentinels_answered"]
    lines = [
        (
            "sentinels",
            f"{answered} of {len(topology['sentinels'])} answered for "
            f"{topology['service']!r} (quorum {topology['quorum'] or '?'})",
        )
    ]
    for sentinel in topology["sentinels"]:
        if sentinel.get("primary"):
            text = f"names {sentinel['primary']} ({sentinel['flags']})"
        else:
            text = sentinel.get("error", "no answer")
        lines.append(("  sentinel", f"{sentinel['address']}: {text}"))
    lines.append(("primary", topology["primary"] or "none usable"))
    for replica in topology["replicas"]:
        lines.append(
            (
                "replica",
                f"{replica['address']} {replica['state']}, lag {replica['lag_seconds']} s "
                f"({replica['lag_bytes']} bytes behind)",
            )
        )
    if topology["primary"] and not topology["replicas"]:
        lines.append(("replica", "none: a failover has nothing to promote"))
    if topology["maxclients"]:
        share = topology["connected_clients"] / topology["maxclients"] * 100
        lines.append(
            (
                "clients",
                f"{topology['connected_clients']} connected of maxclients "
                f"{topology['maxclients']} ({share:.1f} %)",
            )
        )
    return lines


def describe_transport(url: str) -> str:
    if is_sentinel_url(url):
        return "Redis Sentinel, plain TCP"
    scheme = urlsplit(url).scheme
    if scheme == "rediss":
        return "TLS, certificate verified"
    if scheme == "unix":
        return "unix socket"
    if scheme == "redis":
        return "plain TCP"
    return f"unknown scheme {scheme}://"


def describe_memory(server: dict) -> str:
    used, maximum = server["used_memory_bytes"], server["max_memory_bytes"]
    policy = server["maxmemory_policy"] or "unknown"
    if not maximum:
        return f"{human_bytes(used)} used, no maxmemory limit, policy {policy}"
    share = used / maximum * 100
    return f"{human_bytes(used)} used of {human_bytes(maximum)} ({share:.0f} %), policy {policy}"


def human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _short_lived_client(url: str, connect_timeout: float, socket_timeout: float) -> redis.Redis:
    """A client of its own, like the gate's (same timeouts and TLS verification), that tries
    once: a retry would hide the very fault being diagnosed."""
    options = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if urlsplit(url).scheme == "rediss":
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
        if settings.REDIS_TLS_CA_FILE:
            options["ssl_ca_certs"] = settings.REDIS_TLS_CA_FILE
    return redis.Redis.from_url(url, **options)


def _exercise(client: redis.Redis, pings: int) -> dict:
    connect_ms = _timed_ms(client.ping)
    latencies = [_timed_ms(client.ping) for _ in range(max(1, pings))]
    found = {
        "connect_ms": connect_ms,
        "latency_ms": round(statistics.median(latencies), 3),
        "pings": len(latencies),
    }
    try:
        found["server"] = server_figures(client.info())
    except ResponseError as exc:  # INFO renamed or forbidden (some managed services)
        found["server_note"] = f"INFO unavailable: {exc}"
    found["round_trip_key"], found["round_trip_ms"] = _round_trip(client)
    return found


def _round_trip(client: redis.Redis) -> tuple[str, float]:
    key = f"{settings.REDIS_KEY_PREFIX}:diagnostics:{uuid.uuid4().hex[:12]}"
    value = uuid.uuid4().hex
    started = time.perf_counter()
    try:
        # With an expiry, so that even a check cut short leaves nothing behind for long.
        client.set(key, value, px=ROUND_TRIP_TTL_MS)
        read = client.get(key)
        client.delete(key)
    except ResponseError as exc:
        raise _Failed(*_refused_write(key, exc)) from exc
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    if read is None or read.decode() != value:
        raise _Failed(
            SERVER_ERROR, f"{SERVER_ERROR}: {key} read back {read!r} instead of what was written"
        )
    return key, elapsed


def _refused_write(key: str, exc: ResponseError) -> tuple[str, str]:
    message = str(exc)
    if message.startswith("READONLY"):
        return READ_ONLY, (
            f"{READ_ONLY}: the server refuses writes ({message}); point REDIS_URL at the primary"
        )
    if message.startswith("OOM"):
        return OUT_OF_MEMORY, (
            f"{OUT_OF_MEMORY}: Redis refuses writes ({message}); raise maxmemory or use an "
            "evicting policy such as allkeys-lru"
        )
    if message.startswith("NOPERM"):
        return NO_PERMISSION, (
            f"{NO_PERMISSION}: the Redis user may not SET/GET/DEL {key} ({message}); "
            "grant it the keys under REDIS_KEY_PREFIX"
        )
    return SERVER_ERROR, f"{SERVER_ERROR}: SET/GET/DEL of {key} failed: {message}"


def _timed_ms(action) -> float:
    started = time.perf_counter()
    action()
    return round((time.perf_counter() - started) * 1000, 3)


# --- naming the cause ---------------------------------------------------------------------


def diagnose(url: str, exc: BaseException, timeout: float) -> tuple[str, str]:
    """(cause, plain diagnosis) of a failed connection to `url`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or DEFAULT_PORT
    where = parts.path if parts.scheme == "unix" else f"{host}:{port}"
    if isinstance(exc, AuthenticationError):
        return _authentication(parts.password is not None, where, exc)
    chain = _exception_chain(exc)
    named = _named_by_the_error(chain, host, where)
    if named:
        return named
    if parts.scheme == "rediss" and speaks_plain_redis(host, port):
        return TLS_MISMATCH, (
            f"{TLS_MISMATCH}: the URL asks for TLS (rediss://) but the server at {where} "
            "speaks plain Redis; use redis://, or the port where the server offers TLS"
        )
    if parts.scheme == "redis" and speaks_tls(host, port):
        return TLS_MISMATCH, (
            f"{TLS_MISMATCH}: the server at {where} speaks TLS but the URL is plain (redis://); "
            "use rediss://"
        )
    if any(isinstance(error, (RedisTimeout, TimeoutError)) for error in chain):
        return TIMEOUT, (
            f"{TIMEOUT}: no answer from {where} within {timeout:g} s: the server is hung or "
            "overloaded, or a firewall drops the packets (the app waits REDIS_CONNECT_TIMEOUT "
            "and REDIS_SOCKET_TIMEOUT; `redis_check --timeout 2` tries a longer wait)"
        )
    if any(isinstance(error, ssl.SSLError) for error in chain):
        return TLS_ERROR, f"{TLS_ERROR}: the TLS handshake with {where} failed: {exc}"
    if isinstance(exc, ResponseError):
        return SERVER_ERROR, f"{SERVER_ERROR}: {where} answered with an error: {exc}"
    return CONNECTION_LOST, f"{CONNECTION_LOST}: {where}: {exc}"


def _authentication(has_password: bool, where: str, exc: BaseException) -> tuple[str, str]:
    if has_password:
        return WRONG_PASSWORD, (
            f"{WRONG_PASSWORD}: the server at {where} refused the user name and password in "
            f"the URL ({exc})"
        )
    return PASSWORD_REQUIRED, (
        f"{PASSWORD_REQUIRED}: the server at {where} requires a password (NOAUTH) and the URL "
        "carries none; use redis://:PASSWORD@host:port/0"
    )


def _named_by_the_error(chain: list[BaseException], host: str, where: str):
    """The causes the exception itself names, whatever the scheme."""
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            return TLS_CERTIFICATE, (
                f"{TLS_CERTIFICATE}: {error.verify_message or error} for {where}; set "
                "REDIS_TLS_CA_FILE to the CA bundle that signed the server's certificate, and "
                "use the host name the certificate names"
            )
        if isinstance(error, socket.gaierror):
            return UNKNOWN_HOST, (
                f"{UNKNOWN_HOST}: the host name {host!r} does not resolve ({error.strerror}); "
                "check the host in REDIS_URL"
            )
        if isinstance(error, ConnectionRefusedError):
            return REFUSED, (
                f"{REFUSED}: nothing listens on {where}: Redis is down, the port is wrong, or a "
                "firewall rejects the connection"
            )
        if isinstance(error, FileNotFoundError):
            return NO_SOCKET, f"{NO_SOCKET}: there is no Redis socket at {where}"
    return None


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def speaks_plain_redis(host: str, port: int) -> bool:
    """Does the server answer a plain inline PING (with +PONG, or an error such as NOAUTH)?"""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError:
        return False
    return answer[:1] in (b"+", b"-")


def speaks_tls(host: str, port: int) -> bool:
    """Does the server complete a TLS handshake? (Its certificate is not judged here: the
    question is only which protocol the port speaks.)"""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname=host or None):
                return True
    except (OSError, ValueError):
        return False


# --- gates for checking what the cache does ------------------------------------------------


class _FixedSwitch:
    """A switch that says what it was given without asking the database, and ignores
    announcements: the gate that holds it caches (or not) whatever the deployment's switch says,
    and never changes it."""

    def __init__(self, state: SwitchState) -> None:
        self.state = state

    def current(self) -> SwitchState:
        return self.state

    def refresh(self) -> SwitchState:
        return self.state

    def apply(self, state: SwitchState) -> None:
        """Takes a checked server's marker and generation, never its on/off."""
        self.state = replace(state, enabled=True)

    def known(self) -> SwitchState:
        return self.state

    def age(self) -> float:
        return 0.0


ALWAYS_ON = SwitchState(enabled=True, source=RUNTIME, generation=0, stored_enabled=True)


@contextmanager
def caching_on_in_this_process(the_gate: CacheGate = gate):
    """While switched off at runtime, let this process's gate cache anyway (at the current
    generation), to show what caching will do before it is turned on. Only this process: the
    switch row, the audit and every other process are untouched, and turning caching on later
    starts a new generation, so nothing cached meanwhile is ever served. Not while pinned off
    by the environment (its writes would be noted as skipped invalidations)."""
    state = read_state()
    if state.source != RUNTIME:
        raise SwitchUnavailable(why_unavailable())
    previous = the_gate.switch
    the_gate.switch = _FixedSwitch(replace(state, enabled=True))
    try:
        yield state
    finally:
        the_gate.switch = previous


class IsolatedGate(CacheGate):
    """A cache gate of its own on `url`: its own client, switch, breaker and counters. This
    process's gate is not touched, and its breaker changes are kept here, not announced to the
    dashboards. For showing what the gate does when Redis is unreachable."""

    def __init__(self, url: str, timeout: float | None = None) -> None:
        super().__init__()
        self.switch = _FixedSwitch(ALWAYS_ON)
        self.breaker_changes: list[tuple[str, str]] = []
        self._client = _short_lived_client(
            url,
            timeout or settings.REDIS_CONNECT_TIMEOUT,
            timeout or settings.REDIS_SOCKET_TIMEOUT,
        )
        # No half-open probe during a check: the breaker stays open once it has opened.
        self._breaker = CircuitBreaker(
            settings.REDIS_BREAKER_FAILURES, cooldown=3600, on_change=self._breaker_changed
        )
        # The faults here are the point of the exercise, not news for the operator's log.
        self._fault_logged = True

    def _breaker_changed(self, old: str, new: str) -> None:
        self.breaker_changes.append((old, new))

    def _cache_state(self):
        # Its own throwaway server: never checked against (or written to) the switch row.
        return self.switch.current() if self._redis_usable() else None

    def _trusts(self, marker, state) -> bool:
        return True

    def close(self) -> None:
        self._client.close()
