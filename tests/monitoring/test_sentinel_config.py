"""Sentinel configuration: redis+sentinel:// URLs and REDIS_SENTINELS parsed, refused with the
fault named, handed to the cache and to channels_redis, and checked at start-up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from opsdash.checks import check_redis
from opsdash.settings import channel_layer_host, parse_sentinel_url, redis_cache_config

ROOT = Path(__file__).resolve().parents[2]
# Every wait below has its bound; the sentinel timings (tests/sentinel_servers.py) keep each
# failover to a few seconds, the whole file well under 90 s.
pytestmark = pytest.mark.django_db(transaction=True)


def test_it_parses_a_sentinel_url_with_hosts_service_db_and_password():
    config = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380,s3/cache/2")

    assert config == {
        "sentinels": [("10.0.0.1", 26379), ("::1", 26380), ("s3", 26379)],
        "service": "cache",
        "db": 2,
        "username": None,
        "password": "s3cret",
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://10.0.0.1:26379", "no service name"),
        ("redis+sentinel://10.0.0.1:26379/cache/x", "is not SERVICE or SERVICE/DB"),
        ("redis+sentinel://10.0.0.1:port/cache", "'10.0.0.1:port' is not host:port"),
        ("redis+sentinel:///cache", "no sentinel address"),
    ],
)
def test_it_refuses_a_malformed_sentinel_url_naming_the_fault(url, message):
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_it_builds_the_cache_on_the_gates_sentinel_connections():
    cache = redis_cache_config("redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/cache/3")

    assert cache["LOCATION"] == "redis://:pw@cache/3"
    assert cache["OPTIONS"]["CONNECTION_FACTORY"] == (
        "monitoring.cache.connection.GateSentinelConnectionFactory"
    )
    assert cache["OPTIONS"]["SENTINELS"] == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert cache["OPTIONS"]["SOCKET_TIMEOUT"] == settings.REDIS_SOCKET_TIMEOUT


def test_it_gives_channels_redis_the_sentinels_and_the_service():
    host = channel_layer_host("redis+sentinel://127.0.0.1:1,127.0.0.1:2/layer/1")

    assert host == {
        "sentinels": [("127.0.0.1", 1), ("127.0.0.1", 2)],
        "master_name": "layer",
        "db": 1,
        "sentinel_kwargs": {},
    }
    assert channel_layer_host("redis://127.0.0.1:1/1") == "redis://127.0.0.1:1/1"


def test_it_reports_a_sentinel_configuration_error_as_a_system_check():
    with override_settings(REDIS_SENTINEL_ERROR="no service name"):
        (problem,) = [p for p in check_redis() if p.id == "opsdash.E008"]

    assert problem.msg == (
        "The Redis Sentinel configuration of the cache is invalid: no service name."
    )
    assert "REDIS_SENTINEL_SERVICE" in problem.hint


def _check_with(**environment: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CHANNEL_"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**keep, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_stops_start_up_checks_on_sentinels_without_a_service_name():
    result = _check_with(REDIS_SENTINELS="127.0.0.1:26379", CHANNEL_REDIS_URL="redis+sentinel://x")

    assert result.returncode == 1
    assert (
        "opsdash.E008) The Redis Sentinel configuration of the cache is invalid: "
        "REDIS_SENTINELS and REDIS_SENTINEL_SERVICE must be set together."
    ) in result.stderr
    assert (
        "opsdash.E008) The Redis Sentinel configuration of the channel layer is invalid: "
        "no service name: write redis+sentinel://host:port,.../SERVICE/0."
    ) in result.stderr


def test_it_accepts_sentinels_with_a_service_at_start_up():
    result = _check_with(
        REDIS_SENTINELS="127.0.0.1:26379,127.0.0.1:26380", REDIS_SENTINEL_SERVICE="cache"
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
