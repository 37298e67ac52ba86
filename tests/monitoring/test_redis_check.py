"""`manage.py redis_check`: a healthy Redis reported line by line, and every way a connection
fails named: wrong or missing password, TLS either way round, an untrusted certificate,
refused, hung, unknown host, no REDIS_URL. Private redis-servers are started here on free ports
(password, TLS) and ended by their PID; the shared Redis is only read and written under this
test's prefix. The password never appears in what the command prints."""

import datetime
import ipaddress
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from monitoring.cache import gate
from monitoring.redaction import masked_url
from tests.conftest import missing_service
from tests.monitoring.test_switch import ROOT, subprocess_environment
from tests.redis_servers import RedisServer, free_port, redis_server_binary

PASSWORD = "s3cret-pw"
ROUND_TRIP = re.compile(
    r"round trip:  SET, GET, DEL of (?P<key>\S+:diagnostics:[0-9a-f]{12}) ok in \d+\.\d\d ms"
)


def redis_check(*args: str) -> list[str]:
    out = StringIO()
    call_command("redis_check", *args, stdout=out)
    return out.getvalue().splitlines()


def failure(*args: str) -> tuple[str, str]:
    """(the error, what was printed before it) of a check expected to fail."""
    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("redis_check", *args, stdout=out)
    return str(excinfo.value), out.getvalue()


def header(url: str, transport: str = "plain TCP") -> list[str]:
    return [
        f"Redis:       {url} ({transport})",
        f"timeouts:    connect {settings.REDIS_CONNECT_TIMEOUT:g} s, "
        f"read {settings.REDIS_SOCKET_TIMEOUT:g} s",
    ]


# --- private servers ----------------------------------------------------------------------


@contextmanager
def own_redis_server(*options: str, tls_files: dict | None = None):
    """A redis-server of this test's own on a free port (TLS only, with `tls_files`); yields
    the port, and ends the server by its PID."""
    binary = redis_server_binary()
    if binary is None:
        missing_service("a redis-server binary")
    port = free_port()
    directory = tempfile.mkdtemp(prefix="opsdash-redis-check-")
    ports = ["--port", str(port)]
    if tls_files:
        ports = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
        ports += ["--tls-cert-file", tls_files["cert"], "--tls-key-file", tls_files["key"]]
    process = subprocess.Popen(
        [binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", directory, "--logfile", str(Path(directory) / "redis.log"), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not _listening(port, process):
            missing_service(f"redis-server {' '.join(ports[2:4])} did not start (TLS support?)")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def _listening(port: int, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def tls_files():
    """A self-signed certificate for 127.0.0.1, its key, and that certificate as the CA file."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        missing_service("the cryptography package (to make a test certificate)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsdash test redis")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory = Path(tempfile.mkdtemp(prefix="opsdash-tls-"))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    yield {"cert": str(directory / "cert.pem"), "key": str(directory / "key.pem")}
    shutil.rmtree(directory, ignore_errors=True)


# --- a healthy Redis ----------------------------------------------------------------------


def test_it_reports_a_healthy_redis_and_leaves_no_key_behind(shared_redis, cache_prefix):
    lines = redis_check()
    client = redis.Redis.from_url(shared_redis, socket_timeout=2)
    info = client.info()
    assert lines[:2] == header(masked_url(shared_redis))
    assert re.fullmatch(r"connected:   in \d+\.\d\d ms", lines[2])
    assert re.fullmatch(r"latency:     \d+\.\d\d ms \(median of 5 PINGs\)", lines[3])
    assert lines[4] == f"server:      Redis {info['redis_version']}"
    assert lines[5].startswith("memory:      ")
    assert lines[5].endswith(f"policy {info['maxmemory_policy']}")
    round_trip = ROUND_TRIP.fullmatch(lines[6])
    assert round_trip and round_trip["key"].startswith(f"{cache_prefix}:diagnostics:")
    assert lines[7:] == ["Redis works."]
    assert client.exists(round_trip["key"]) == 0
    # A client of its own: the gate (its counters, its breaker) saw nothing.
    assert gate.stats.snapshot() == {}
    assert gate.breaker.state == "closed"


def test_it_checks_the_url_given_instead_of_the_configured_one(shared_redis):
    with override_settings(REDIS_URL=None):
        lines = redis_check("--url", shared_redis, "--pings", "3", "--timeout", "2")
    assert lines[:2] == [
        f"Redis:       {masked_url(shared_redis)} (plain TCP)",
        "timeouts:    connect 2 s, read 2 s",
    ]
    assert re.fullmatch(r"latency:     \d+\.\d\d ms \(median of 3 PINGs\)", lines[3])
    assert lines[-1] == "Redis works."


def test_it_connects_with_the_right_password_and_never_prints_it():
    with own_redis_server("--requirepass", PASSWORD) as port:
        url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
        with override_settings(REDIS_URL=url):
            lines = redis_check()
    assert lines[:2] == header(f"redis://:***@127.0.0.1:{port}/0")
    assert lines[-1] == "Redis works."
    assert PASSWORD not in "\n".join(lines)


# --- what goes wrong ----------------------------------------------------------------------


def test_it_names_a_wrong_password_without_printing_it():
    with own_redis_server("--requirepass", PASSWORD) as port:
        with override_settings(REDIS_URL=f"redis://:not-{PASSWORD}@127.0.0.1:{port}/0"):
            error, printed = failure()
    assert error.startswith(
        f"wrong password: the server at 127.0.0.1:{port} refused the user name and password "
        "in the URL ("
    )
    assert printed.splitlines() == header(f"redis://:***@127.0.0.1:{port}/0")
    assert PASSWORD not in error + printed


def test_it_names_a_missing_password():
    with own_redis_server("--requirepass", PASSWORD) as port:
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{port}/0"):
            error, _ = failure()
    assert error == (
        f"password required: the server at 127.0.0.1:{port} requires a password (NOAUTH) and "
        "the URL carries none; use redis://:PASSWORD@host:port/0"
    )


def test_it_names_a_refused_connection():
    port = free_port()
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{port}/0"):
        error, printed = failure()
    assert error == (
        f"connection refused: nothing listens on 127.0.0.1:{port}: Redis is down, the port is "
        "wrong, or a firewall rejects the connection"
    )
    assert printed.splitlines() == header(f"redis://127.0.0.1:{port}/0")


def test_it_names_a_timeout_against_a_hung_server():
    if redis_server_binary() is None:
        missing_service("a redis-server binary")
    server = RedisServer().start()
    try:
        server.hang()
        with override_settings(REDIS_URL=server.url):
            error, _ = failure()
    finally:
        server.close()
    assert error.startswith(
        f"timeout: no answer from 127.0.0.1:{server.port} within "
        f"{max(settings.REDIS_CONNECT_TIMEOUT, settings.REDIS_SOCKET_TIMEOUT):g} s: "
        "the server is hung or overloaded"
    )


def test_it_names_tls_asked_of_a_plain_server():
    with own_redis_server("--requirepass", PASSWORD) as port:
        with override_settings(REDIS_URL=f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"):
            error, printed = failure()
    assert error == (
        f"TLS mismatch: the URL asks for TLS (rediss://) but the server at 127.0.0.1:{port} "
        "speaks plain Redis; use redis://, or the port where the server offers TLS"
    )
    assert printed.splitlines()[0] == (
        f"Redis:       rediss://:***@127.0.0.1:{port}/0 (TLS, certificate verified)"
    )
    assert PASSWORD not in error + printed


def test_it_names_a_plain_url_against_a_tls_server(tls_files):
    with own_redis_server(tls_files=tls_files) as port:
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{port}/0"):
            error, _ = failure()
    assert error == (
        f"TLS mismatch: the server at 127.0.0.1:{port} speaks TLS but the URL is plain "
        "(redis://); use rediss://"
    )


def test_it_names_an_untrusted_certificate(tls_files):
    with own_redis_server(tls_files=tls_files) as port:
        with override_settings(REDIS_URL=f"rediss://127.0.0.1:{port}/0", REDIS_TLS_CA_FILE=None):
            error, _ = failure()
    assert error.startswith("TLS certificate not trusted: ")
    assert f"for 127.0.0.1:{port}; set REDIS_TLS_CA_FILE to the CA bundle" in error


def test_it_connects_over_tls_with_the_configured_ca(tls_files):
    with own_redis_server("--requirepass", PASSWORD, tls_files=tls_files) as port:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
        with override_settings(REDIS_URL=url, REDIS_TLS_CA_FILE=tls_files["cert"]):
            lines = redis_check()
    assert lines[:2] == header(f"rediss://:***@127.0.0.1:{port}/0", "TLS, certificate verified")
    assert lines[-1] == "Redis works."
    assert PASSWORD not in "\n".join(lines)


def test_it_names_an_unknown_host():
    with override_settings(REDIS_URL="redis://opsdash-no-such-host.invalid:6379/0"):
        error, _ = failure()
    assert error.startswith(
        "unknown host: the host name 'opsdash-no-such-host.invalid' does not resolve ("
    )
    assert error.endswith("); check the host in REDIS_URL")


def test_it_says_when_no_redis_url_is_configured():
    with override_settings(REDIS_URL=None):
        error, printed = failure()
    assert error == (
        "no REDIS_URL configured: caching is off and there is no Redis to check "
        "(set REDIS_URL=redis://host:6379/0, or rediss://... for TLS)"
    )
    assert printed.splitlines() == [
        f"timeouts:    connect {settings.REDIS_CONNECT_TIMEOUT:g} s, "
        f"read {settings.REDIS_SOCKET_TIMEOUT:g} s"
    ]


def test_it_names_an_invalid_url():
    error, _ = failure("--url", "http://127.0.0.1:6379/0")
    assert error == (
        "invalid URL: Redis URL must specify one of the following schemes "
        "(redis://, rediss://, unix://)"
    )


def test_it_refuses_a_timeout_that_is_not_positive():
    error, _ = failure("--timeout", "0")
    assert error == "--timeout must be a positive number of seconds"


def test_it_exits_with_status_1_and_the_cause_on_stderr():
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    result = subprocess.run(
        [sys.executable, "manage.py", "redis_check"],
        cwd=ROOT,
        env={**subprocess_environment(), "REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert (
        result.stdout.splitlines()[0] == f"Redis:       redis://:***@127.0.0.1:{port}/0 (plain TCP)"
    )
    assert result.stderr.strip() == (
        f"CommandError: connection refused: nothing listens on 127.0.0.1:{port}: Redis is down, "
        "the port is wrong, or a firewall rejects the connection"
    )
    assert PASSWORD not in result.stdout + result.stderr
