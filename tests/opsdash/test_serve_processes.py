"""`manage.py serve --processes 2` as a user runs it: a real subprocess on this run's database,
with its embedded redis-server (in a directory of the test's own), two daphne children on one
port, a killed child started again, and SIGTERM ending every process it started."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer
from django.core.management.base import CommandError

from monitoring.events import DASHBOARD_GROUP
from opsdash.management.commands import serve
from tests.conftest import missing_service
from tests.monitoring.evaluator_support import wait_for
from tests.monitoring.metrics_support import ROOT, TOKEN, bearer, subprocess_environment
from tests.redis_servers import free_port

# The children see only committed rows; what they wrote is flushed after the test.
served_test = pytest.mark.django_db(transaction=True)

STARTED = re.compile(r"^worker (\d+): daphne pid (\d+) started$", re.MULTILINE)
EMBEDDED = re.compile(r"redis: embedded redis-server \(pid (\d+)\)")


class Serve:
    """`manage.py serve --processes N` on a free port, its output in a file, ended by its PID."""

    def __init__(self, processes: int) -> None:
        # Short: the embedded redis-server's unix socket lives in it (at most 107 bytes).
        self.var_dir = Path(tempfile.mkdtemp(prefix="opsdash-serve-"))
        self.log = self.var_dir / "serve.log"
        self.port = free_port()
        self.processes = processes
        self.process: subprocess.Popen | None = None

    def start(self) -> "Serve":
        environment = subprocess_environment(
            VAR_DIR=str(self.var_dir),
            SECURE_SSL_REDIRECT="false",
            ALLOWED_HOSTS="127.0.0.1",
            MONITORING_TOKEN=TOKEN,
            METRICS_ENABLED="true",
            METRICS_FLUSH_SECONDS="1",
            REDIS_MONITORING_ENABLED="false",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        # serve starts its own redis-server only when no Redis is configured.
        for name in ("REDIS_URL", "REDIS_EMBEDDED", "CHANNEL_REDIS_URL"):
            environment.pop(name, None)
        command = [sys.executable, "manage.py", "serve", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*command, "--processes", str(self.processes)],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90
        while not (len(self.children()) == self.processes and self.answers()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"serve did not start:\n{self.output()}")
            time.sleep(0.1)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> dict[int, int]:
        """The pid serve last started in each worker slot."""
        return {int(number): int(pid) for number, pid in STARTED.findall(self.output())}

    def redis_pid(self) -> int:
        return int(EMBEDDED.search(self.output()).group(1))

    def get(self, path: str, **headers: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def answers(self) -> bool:
        try:
            return self.get("/api/monitoring/health/live")[0] == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.var_dir, ignore_errors=True)


def alive(pid: int) -> bool:
    """Running (a zombie has exited: only its parent has not collected its status yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def holder(children: list[int], sock: socket.socket) -> int | None:
    """Which child holds the server end of this client connection (Linux /proc: the socket
    whose remote port is the client's, and the process with a descriptor on it)."""
    server_port, client_port = sock.getpeername()[1], sock.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (server_port, client_port):
            inodes.add(f"socket:[{fields[9]}]")
    for pid in children:
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(descriptor) in inodes:
                    return pid
            except FileNotFoundError:
                continue
    return None


@pytest.fixture
def served():
    if serve.redis_server_binary() is None:
        missing_service("a redis-server binary")
    server = Serve(processes=2)
    try:
        yield server.start()
    finally:
        server.close()


def reported_processes(server: Serve) -> set[str]:
    """The processes the deployment's metrics merged in the last minute (each child writes its
    own window every second once it has served something)."""
    for _ in range(20):  # new connections: each is accepted by whichever child is quicker
        assert server.answers()
    status, body = server.get("/api/monitoring/metrics/performance?window=60s", **bearer())
    assert status == 200
    return set(json.loads(body)["processes"])


@served_test
def test_it_serves_one_port_from_two_daphne_processes_and_restarts_a_killed_one(served):
    children = served.children()
    assert sorted(children) == [1, 2]
    hostname = socket.gethostname()
    expected = {f"{hostname}:{pid}" for pid in children.values()}
    assert wait_for(lambda: reported_processes(served) == expected, 60)

    killed = children[1]
    os.kill(killed, signal.SIGKILL)
    restarted = wait_for(lambda: served.children()[1] != killed and served.children()[1], 60)
    assert f"worker 1: daphne pid {killed} exited (signal SIGKILL)" in served.output()
    assert not alive(killed)
    assert wait_for(served.answers, 60)
    assert served.children()[2] == children[2]
    after = {f"{hostname}:{restarted}", f"{hostname}:{children[2]}"}
    assert wait_for(lambda: after <= reported_processes(served), 60)

    started = [*served.children().values(), served.redis_pid()]
    assert all(alive(pid) for pid in started)
    assert served.stop() == 0
    assert [pid for pid in started if alive(pid)] == []
    assert "stopping 2 daphne process(es)" in served.output()


@served_test
def test_it_shares_one_redis_channel_layer_between_its_processes(served):
    """Each child holds a live stream; an event published to the layer from another process
    (this one) reaches both: the in-memory layer would reach neither."""
    children = list(served.children().values())
    streams: dict[int, http.client.HTTPResponse] = {}
    opened = []
    for _ in range(40):  # until the kernel has handed a stream to each child
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=20)
        conn.request("GET", "/api/monitoring/stream", headers=bearer())
        response = conn.getresponse()
        assert response.status == 200
        assert response.readline() == b": opsdash monitoring stream\n"
        opened.append(conn)
        pid = holder(children, conn.sock)
        if pid is not None and pid not in streams:
            streams[pid] = response
        if len(streams) == 2:
            break
    assert sorted(streams) == sorted(children)

    socket_path = served.var_dir / "redis.sock"
    layer = RedisChannelLayer(hosts=[f"unix://{socket_path}?db={serve.EMBEDDED_CHANNEL_DB}"])
    message = {"type": "dashboard.event", "event": "test.ping", "payload": {"n": 7}}
    async_to_sync(layer.group_send)(DASHBOARD_GROUP, message)

    for response in streams.values():
        assert read_event(response, "test.ping") == 'data: {"n": 7}'
    for conn in opened:
        conn.close()


def read_event(response: http.client.HTTPResponse, name: str) -> str:
    """The data line of the first `name` event on the stream (snapshots come in between)."""
    while True:
        line = response.readline().decode()
        assert line, "the stream ended"
        if line == f"event: {name}\n":
            return response.readline().decode().rstrip("\n")


@pytest.mark.parametrize(
    ("channel_url", "extra_env", "planned", "child_channel_url"),
    [
        ("", {}, 1, None),
        ("redis://events:6379/0", {}, 3, None),
        (
            "",
            {"REDIS_URL": "unix:///v/redis.sock", "REDIS_EMBEDDED": "true"},
            3,
            "unix:///v/redis.sock?db=1",
        ),
        ("", {"REDIS_URL": "redis://cache:6379/0"}, 1, None),
    ],
    ids=["no-redis", "channel-redis-url", "embedded", "cache-redis-only"],
)
def test_it_gives_several_processes_a_shared_channel_layer_or_serves_with_one(
    settings, channel_url, extra_env, planned, child_channel_url
):
    settings.CHANNEL_REDIS_URL = channel_url or None
    processes, said = serve.channel_layer_plan(3, extra_env)
    assert processes == planned
    assert extra_env.get("CHANNEL_REDIS_URL") == child_channel_url
    if planned == 1:
        assert said.endswith("there is none: serving with 1 process")


def test_it_serves_one_process_without_a_word_about_the_channel_layer():
    assert serve.channel_layer_plan(1, {}) == (1, "")


def test_it_waits_longer_before_each_restart_of_a_crash_loop_up_to_a_limit():
    delays = [serve.restart_delay(failures) for failures in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]


def test_it_refuses_a_host_without_an_ipv4_address():
    with pytest.raises(CommandError, match="needs an IPv4 address"):
        serve.listening_socket("::1", 0)


def test_it_says_so_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve.listening_socket("127.0.0.1", port)
