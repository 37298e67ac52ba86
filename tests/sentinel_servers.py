"""A private Redis under Sentinel for tests: a primary, a replica and three sentinels, each its
own redis-server process on a free loopback port, with its configuration file in a temporary
directory, ended by its own PID. Timings are short (down after 1 s, failover timeout 3 s) so a
failover takes a few seconds."""

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.redis_servers import RedisServer, free_port, redis_server_binary

SERVICE = "opsdash-test"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class Sentinel:
    """One `redis-server sentinel.conf --sentinel` process."""

    def __init__(self, primary_port: int, quorum: int) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="opsdash-sentinel-"))
        self.config = self.dir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> "Sentinel":
        self.process = subprocess.Popen(
            [redis_server_binary(), str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: self.client().ping(), f"sentinel on port {self.port} did not start")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def master(self) -> dict:
        return self.client().sentinel_master(SERVICE)

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSet:
    """A primary, a replica and three sentinels (quorum 2), ready once every sentinel knows
    the replica and the two other sentinels."""

    def __init__(self, sentinels: int = 3, quorum: int = 2) -> None:
        self.primary = RedisServer()
        self.replica: RedisServer | None = None
        self.sentinel_count, self.quorum = sentinels, quorum
        self.sentinels: list[Sentinel] = []
        # Every data node ever started, by port (failover swaps the roles).
        self.nodes: dict[int, RedisServer] = {}

    def start(self) -> "SentinelSet":
        self.primary.start()
        self.replica = RedisServer(args=("--replicaof", "127.0.0.1", str(self.primary.port)))
        self.replica.start()
        self.nodes = {self.primary.port: self.primary, self.replica.port: self.replica}
        self.sentinels = [
            Sentinel(self.primary.port, self.quorum).start() for _ in range(self.sentinel_count)
        ]
        self.wait_until_settled()
        return self

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def primary_port(self) -> int:
        return int(self.sentinels[0].master()["port"])

    def wait_until_settled(self, timeout: float = 20) -> None:
        """Every live sentinel names the same live primary, knows one replica of it that is
        up, and the other sentinels."""

        def settled() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                master = sentinel.master()
                replicas = [
                    r
                    for r in sentinel.client().sentinel_slaves(SERVICE)
                    if not (r["is_sdown"] or r["is_odown"]) and r.get("master-link-status") == "ok"
                ]
                others = master["num-other-sentinels"]
                if (
                    master["is_sdown"]
                    or not replicas
                    or others < self.sentinel_count - 1
                    or master["flags"] != "master"
                ):
                    return False
                ports.add(int(master["port"]))
            return len(ports) == 1

        _wait(settled, "the sentinels did not settle", timeout=timeout, quiet=True)

    def fail_over(self, timeout: float = 40) -> int:
        """`SENTINEL FAILOVER`; returns the new primary's port once the sentinels name it.
        Asked again while a sentinel refuses or gives up (its view of a replica that came back
        is refreshed only by its next INFO, and a failover follows the last one only after
        twice the failover timeout)."""
        old = self.primary_port()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", SERVICE)
            except redis.ResponseError:
                pass  # INPROG or NOGOODSLAVE: asked again below
            try:
                _wait(lambda: self.primary_port() != old, "", timeout=8, quiet=True)
                return self.primary_port()
            except RuntimeError:
                continue
        raise RuntimeError("no new primary")

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for node in self.nodes.values():
            node.close()


def _wait(check, message: str, timeout: float = 10, quiet: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.ConnectionError, redis.ResponseError):
            if not quiet and time.monotonic() > deadline:
                raise RuntimeError(message) from None
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.05)
