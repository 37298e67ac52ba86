"""How the gate connects to its Redis: django-redis with connection classes of our own.

Two things the stock connections do not do:
- a host name is resolved within the connect timeout (a slow resolver would otherwise hold a
  request for seconds: `getaddrinfo` knows nothing of socket timeouts), from a short-lived cache
  of answers that is served stale while a slow lookup finishes in the background;
- every new connection asks the server who it is (`INFO server`: its run id), so the gate can
  tell that the server behind the address is no longer the one it wrote to (a restart from an
  older snapshot, a promoted replica) before it trusts anything read from it.

Under Sentinel the same classes connect to the primary the sentinels name, asked again for
every new connection (redis-py's Sentinel-managed connections) and once a second by a watcher
(which closes the connections to a primary the sentinels no longer name): a connection to a
demoted primary answers a write with READONLY, which closes it and is a fault to the gate, and
the next connection finds the new primary, whose other run id starts a new generation.
"""

import ipaddress
import socket
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

import redis.asyncio
import redis.asyncio.connection as aio
import redis.asyncio.sentinel as aio_sentinel
from django_redis.pool import ConnectionFactory, SentinelConnectionFactory
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import RedisError
from redis.sentinel import SentinelManagedConnection

# How long a resolved address is used before it is looked up again (managed Redis moves its
# name to a new primary on failover, so this is short).
RESOLVE_FRESH_SECONDS = 5.0


class ServerIdentity:
    """The run ids of the servers this process's connections reached. `trusted` is the one the
    gate verified; a connection that reaches another one raises the `changed` flag, which the
    gate checks after every command (the flag is set before the command is sent)."""

    def __init__(self) -> None:
        self.seen: str | None = None
        self.trusted: str | None = None
        self.changed = False

    def saw(self, run_id: str) -> None:
        self.seen = run_id
        if run_id != self.trusted:
            self.changed = True

    def trust(self, run_id: str) -> None:
        self.trusted = run_id
        self.changed = self.seen is not None and self.seen != run_id

    def forget_seen(self) -> None:
        """Every connection that saw another server has been closed."""
        self.seen = None
        self.changed = False


def run_id_of(info_server: str) -> str:
    """The run_id line of an `INFO server` answer."""
    for line in info_server.splitlines():
        if line.startswith("run_id:"):
            return line.split(":", 1)[1].strip()
    return ""


class BoundedResolver:
    """Host name lookups that cost a caller at most `timeout`: each lookup runs on a worker
    thread; an answer younger than RESOLVE_FRESH_SECONDS is reused; an older one is served when
    the new lookup is slow, and replaced when it finishes."""

    def __init__(self, lookup: Callable = socket.getaddrinfo, clock=time.monotonic) -> None:
        self._lookup = lookup
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, int], tuple[float, list]] = {}
        self._pending: dict[tuple[str, int], Future] = {}
        self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="opsdash-resolve")

    def resolve(self, host: str, port: int, timeout: float) -> list:
        literal = _literal_address(host, port)
        if literal is not None:
            return literal
        key = (host, port)
        with self._lock:
            known = self._answers.get(key)
            if known is not None and self._clock() - known[0] < RESOLVE_FRESH_SECONDS:
                return known[1]
            pending = self._pending.get(key)
            if pending is None:
                pending = self._workers.submit(self._look_up, key)
                self._pending[key] = pending
        try:
            return pending.result(timeout=timeout)
        except TimeoutError:
            if known is not None:
                return known[1]  # slow resolver: the last answer, while the lookup goes on
            raise TimeoutError(f"resolving {host} took longer than {timeout} s") from None

    def _look_up(self, key: tuple[str, int]) -> list:
        try:
            answer = self._lookup(key[0], key[1], 0, socket.SOCK_STREAM)
            with self._lock:
                self._answers[key] = (self._clock(), answer)
            return answer
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def forget(self) -> None:
        with self._lock:
            self._answers.clear()


def _literal_address(host: str, port: int) -> list | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(address), port))]


resolver = BoundedResolver()


class _GateConnectionMixin:
    """Identity on connect (and, for TCP, a bounded resolver); `server_identity` is the pool's."""

    def __init__(self, *args, server_identity: ServerIdentity | None = None, **kwargs) -> None:
        self.server_identity = server_identity
        super().__init__(*args, **kwargs)

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health=check_health)
        if self.server_identity is None:
            return
        self.send_command("INFO", "server")
        answer = self.read_response()
        if isinstance(answer, bytes):
            answer = answer.decode("utf-8", "replace")
        self.server_identity.saw(run_id_of(answer))

    def _tcp_socket(self) -> socket.socket:
        """A connected TCP socket: resolution and connection share one connect timeout."""
        timeout = self.socket_connect_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        addresses = resolver.resolve(self.host, self.port, timeout)
        error: OSError | None = None
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.socket_keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    for option, value in self.socket_keepalive_options.items():
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("connect timeout spent resolving the host name")
                sock.settimeout(left)
                sock.connect(address)
                sock.settimeout(self.socket_timeout)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error or OSError(f"no address for {self.host}")


class GateConnection(_GateConnectionMixin, Connection):
    def _connect(self):
        return self._tcp_socket()


class GateSSLConnection(_GateConnectionMixin, SSLConnection):
    def _connect(self):
        sock = self._tcp_socket()
        try:
            return self._wrap_socket_with_ssl(sock)
        except Exception:
            sock.close()
            raise


class GateUnixConnection(_GateConnectionMixin, UnixDomainSocketConnection):
    pass


CONNECTION_CLASSES = {
    "redis": GateConnection,
    "rediss": GateSSLConnection,
    "unix": GateUnixConnection,
}


class GateConnectionFactory(ConnectionFactory):
    """django-redis's factory, building pools of the gate's connection classes, each pool with
    a ServerIdentity of its own (`identity_of(client)`)."""

    _pools: dict = {}

    def get_connection_pool(self, params: dict):
        scheme = urlsplit(params["url"]).scheme
        params = {
            **params,
            "connection_class": CONNECTION_CLASSES.get(scheme, GateConnection),
            "server_identity": ServerIdentity(),
        }
        return super().get_connection_pool(params)

    @classmethod
    def forget_pools(cls) -> None:
        for pool in cls._pools.values():
            pool.disconnect()
        cls._pools.clear()


class GateSentinelConnection(_GateConnectionMixin, SentinelManagedConnection):
    """A connection to the primary the sentinels name (asked on every connect)."""

    def _connect(self):
        return self._tcp_socket()


class GateSentinelConnectionFactory(SentinelConnectionFactory):
    """django-redis's Sentinel factory, with the gate's connection class and a ServerIdentity
    per pool, like GateConnectionFactory."""

    _pools: dict = {}

    def get_or_create_connection_pool(self, params: dict):
        # One pool per service and set of sentinels (the URL names only the service).
        key = (params["url"], tuple(map(tuple, self.options["SENTINELS"])))
        if key not in self._pools:
            self._pools[key] = self.get_connection_pool(params)
        return self._pools[key]

    def get_connection_pool(self, params: dict):
        params = {
            **params,
            "connection_class": GateSentinelConnection,
            "server_identity": ServerIdentity(),
        }
        pool = super().get_connection_pool(params)
        PrimaryWatcher(pool).start()
        return pool


# How often a Sentinel pool asks the sentinels which server is the primary.
SENTINEL_WATCH_SECONDS = 1.0


class PrimaryWatcher(threading.Thread):
    """Asks the sentinels for the primary every SENTINEL_WATCH_SECONDS, off the request path:
    when they name another one, the pool's idle connections to the old one are closed (and the
    busy ones when they come back), so the gate moves within a second of a failover. Without
    it, connections stay on a forced failover's old primary, which keeps taking writes, until
    the sentinels next look at it and demote it (their INFO every 10 s). It ends with its pool."""

    def __init__(self, pool) -> None:
        super().__init__(name="opsdash-sentinel-watch", daemon=True)
        self._pool = weakref.ref(pool)

    def run(self) -> None:
        while True:
            time.sleep(SENTINEL_WATCH_SECONDS)
            pool = self._pool()
            if pool is None:
                return
            try:
                pool.get_master_address()
            except (RedisError, OSError):
                pass  # no primary named now: the commands' own faults tell the gate
            del pool


def sentinels_of(cache: dict) -> list[tuple[str, int]]:
    """The sentinel addresses of the django-redis cache `cache`, or [] when it is not under
    Sentinel."""
    return [tuple(address) for address in cache.get("OPTIONS", {}).get("SENTINELS", [])]


class _AsyncIdentityMixin:
    """The same identity check on the event loop's connections. (Name resolution needs no
    bounding here: asyncio resolves in a worker thread, under the connect timeout.)"""

    def __init__(self, *args, server_identity: ServerIdentity | None = None, **kwargs) -> None:
        self.server_identity = server_identity
        super().__init__(*args, **kwargs)

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        await super().on_connect_check_health(check_health=check_health)
        if self.server_identity is None:
            return
        await self.send_command("INFO", "server")
        answer = await self.read_response()
        if isinstance(answer, bytes):
            answer = answer.decode("utf-8", "replace")
        self.server_identity.saw(run_id_of(answer))


class AsyncGateConnection(_AsyncIdentityMixin, aio.Connection):
    pass


class AsyncGateSSLConnection(_AsyncIdentityMixin, aio.SSLConnection):
    pass


class AsyncGateUnixConnection(_AsyncIdentityMixin, aio.UnixDomainSocketConnection):
    pass


ASYNC_CONNECTION_CLASSES = {
    "redis": AsyncGateConnection,
    "rediss": AsyncGateSSLConnection,
    "unix": AsyncGateUnixConnection,
}


class AsyncGateSentinelConnection(_AsyncIdentityMixin, aio_sentinel.SentinelManagedConnection):
    pass


def _async_sentinel_client(cache: dict) -> redis.asyncio.Redis:
    url, options = urlsplit(cache["LOCATION"]), cache["OPTIONS"]
    sentinel = aio_sentinel.Sentinel(
        sentinels_of(cache), sentinel_kwargs=options.get("SENTINEL_KWARGS")
    )
    pool = aio_sentinel.SentinelConnectionPool(
        url.hostname,
        sentinel,
        connection_class=AsyncGateSentinelConnection,
        server_identity=ServerIdentity(),
        db=int(url.path.strip("/") or 0),
        username=url.username or None,
        password=url.password or None,
        socket_timeout=options.get("SOCKET_TIMEOUT"),
        socket_connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT"),
        **options.get("CONNECTION_POOL_KWARGS", {}),
    )
    return redis.asyncio.Redis(connection_pool=pool)


def async_client(cache: dict) -> redis.asyncio.Redis:
    """An asyncio client for the django-redis cache `cache` (its settings entry): the same
    server, timeouts and pool options, and a ServerIdentity of its own."""
    if sentinels_of(cache):
        return _async_sentinel_client(cache)
    url, options = cache["LOCATION"], cache.get("OPTIONS", {})
    pool = aio.ConnectionPool.from_url(
        url,
        socket_timeout=options.get("SOCKET_TIMEOUT"),
        socket_connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT"),
        **options.get("CONNECTION_POOL_KWARGS", {}),
    )
    # Set after parsing: from_url picks the stock class of a unix:// URL over one passed in.
    pool.connection_class = ASYNC_CONNECTION_CLASSES.get(urlsplit(url).scheme, AsyncGateConnection)
    pool.connection_kwargs["server_identity"] = ServerIdentity()
    return redis.asyncio.Redis(connection_pool=pool)


def identity_of(client) -> ServerIdentity:
    identity = client.connection_pool.connection_kwargs.get("server_identity")
    if identity is None:  # a client built some other way: nothing is ever trusted blindly
        identity = client.connection_pool.connection_kwargs["server_identity"] = ServerIdentity()
    return identity
