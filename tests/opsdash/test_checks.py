"""The system checks: each id fires on its misconfiguration, with a hint, and only then."""

import pytest
from django.conf import settings
from django.core.checks import ERROR, WARNING
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from opsdash.checks import check_deployment, check_redis, check_security

SAFE_SECURITY = {
    "DEBUG": False,
    "SECRET_KEY": "a-long-random-value-that-is-not-the-default-0123456789",
    "PUBLIC_BASE_URL": "https://ops.example.com",
}
SAFE_REDIS = {
    "REDIS_ENABLED": None,
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "REDIS_SOCKET_TIMEOUT": 0.05,
    "REDIS_CONNECT_TIMEOUT": 0.05,
    "CHANNEL_REDIS_URL": "redis://127.0.0.1:1/1",
}
SAFE_DEPLOYMENT = {"DEBUG": False, "DATABASE_IS_POSTGRES": True}


def run(check, **overrides) -> list:
    with override_settings(**overrides):
        return check()


def only(problems: list, check_id: str, level: int):
    assert [p.id for p in problems] == [check_id]
    problem = problems[0]
    assert problem.level == level
    assert problem.hint
    return problem


# --- check_security -------------------------------------------------------------------------


def test_it_passes_a_safe_security_configuration():
    assert run(check_security, **SAFE_SECURITY) == []


def test_it_reports_the_default_secret_key_with_debug_off():
    settings_ = {**SAFE_SECURITY, "SECRET_KEY": settings.DEFAULT_SECRET_KEY}
    problem = only(run(check_security, **settings_), "opsdash.E001", ERROR)
    assert "SECRET_KEY" in problem.msg
    assert "SECRET_KEY" in problem.hint


def test_it_allows_the_default_secret_key_with_debug_on():
    settings_ = {**SAFE_SECURITY, "DEBUG": True, "SECRET_KEY": settings.DEFAULT_SECRET_KEY}
    assert run(check_security, **settings_) == []


@pytest.mark.parametrize("url", ["http://ops.example.com", "ops.example.com", ""])
def test_it_warns_about_a_public_url_that_is_not_https(url):
    problem = only(
        run(check_security, **{**SAFE_SECURITY, "PUBLIC_BASE_URL": url}), "opsdash.W007", WARNING
    )
    assert repr(url) in problem.msg
    assert "PUBLIC_BASE_URL" in problem.hint


def test_it_allows_an_http_public_url_with_debug_on():
    settings_ = {**SAFE_SECURITY, "DEBUG": True, "PUBLIC_BASE_URL": "http://localhost:8000"}
    assert run(check_security, **settings_) == []


def test_it_reports_both_security_problems_at_once():
    settings_ = {
        **SAFE_SECURITY,
        "SECRET_KEY": settings.DEFAULT_SECRET_KEY,
        "PUBLIC_BASE_URL": "http://localhost:8000",
    }
    assert [p.id for p in run(check_security, **settings_)] == ["opsdash.E001", "opsdash.W007"]


# --- check_redis ----------------------------------------------------------------------------


def test_it_passes_a_safe_redis_configuration():
    assert run(check_redis, **SAFE_REDIS) == []


@pytest.mark.parametrize("enabled", [None, False])
def test_it_passes_without_any_redis_unless_it_is_required(enabled):
    settings_ = {
        **SAFE_REDIS,
        "REDIS_ENABLED": enabled,
        "REDIS_URL": None,
        "CHANNEL_REDIS_URL": None,
    }
    assert run(check_redis, **settings_) == []


def test_it_reports_redis_enabled_without_a_url():
    settings_ = {**SAFE_REDIS, "REDIS_ENABLED": True, "REDIS_URL": None}
    problem = only(run(check_redis, **settings_), "opsdash.E002", ERROR)
    assert "REDIS_URL" in problem.msg
    assert "REDIS_URL" in problem.hint


def test_it_allows_redis_enabled_with_a_url():
    assert run(check_redis, **{**SAFE_REDIS, "REDIS_ENABLED": True}) == []


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("http://127.0.0.1:6379/0", "http"),
        ("tcp://127.0.0.1:6379", "tcp"),
        ("127.0.0.1:6379", ""),
    ],
)
def test_it_reports_a_redis_url_with_an_unknown_scheme(url, scheme):
    problem = only(run(check_redis, **{**SAFE_REDIS, "REDIS_URL": url}), "opsdash.E003", ERROR)
    assert repr(scheme) in problem.msg
    assert "rediss://" in problem.hint


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "rediss://cache.example.com:6380/0", "unix:///run/redis.sock"],
)
def test_it_accepts_the_redis_url_schemes(url):
    assert run(check_redis, **{**SAFE_REDIS, "REDIS_URL": url}) == []


@pytest.mark.parametrize(
    ("socket_timeout", "connect_timeout", "slowest"),
    [(2.0, 0.05, 2.0), (0.05, 1.5, 1.5), (3.0, 3.0, 3.0)],
)
def test_it_warns_about_a_long_redis_timeout(socket_timeout, connect_timeout, slowest):
    settings_ = {
        **SAFE_REDIS,
        "REDIS_SOCKET_TIMEOUT": socket_timeout,
        "REDIS_CONNECT_TIMEOUT": connect_timeout,
    }
    problem = only(run(check_redis, **settings_), "opsdash.W004", WARNING)
    assert f"{slowest} s" in problem.msg


def test_it_allows_a_redis_timeout_of_one_second():
    settings_ = {**SAFE_REDIS, "REDIS_SOCKET_TIMEOUT": 1.0, "REDIS_CONNECT_TIMEOUT": 1.0}
    assert run(check_redis, **settings_) == []


def test_it_warns_when_the_channel_layer_shares_the_cache_redis():
    settings_ = {**SAFE_REDIS, "CHANNEL_REDIS_URL": SAFE_REDIS["REDIS_URL"]}
    problem = only(run(check_redis, **settings_), "opsdash.W005", WARNING)
    assert "CHANNEL_REDIS_URL" in problem.hint


@pytest.mark.parametrize("channel_url", [None, "redis://127.0.0.1:1/1", "redis://other:6379/0"])
def test_it_allows_a_separate_or_in_memory_channel_layer(channel_url):
    assert run(check_redis, **{**SAFE_REDIS, "CHANNEL_REDIS_URL": channel_url}) == []


def test_it_does_not_compare_channel_and_cache_urls_without_a_cache_redis():
    settings_ = {**SAFE_REDIS, "REDIS_URL": None, "CHANNEL_REDIS_URL": None}
    assert run(check_redis, **settings_) == []


# --- check_deployment -----------------------------------------------------------------------


def test_it_warns_about_sqlite_with_debug_off():
    settings_ = {**SAFE_DEPLOYMENT, "DATABASE_IS_POSTGRES": False}
    problem = only(run(check_deployment, **settings_), "opsdash.W006", WARNING)
    assert "SQLite" in problem.msg
    assert "DATABASE_URL" in problem.hint


@pytest.mark.parametrize(("debug", "postgres"), [(False, True), (True, False), (True, True)])
def test_it_allows_postgres_or_debug(debug, postgres):
    assert run(check_deployment, DEBUG=debug, DATABASE_IS_POSTGRES=postgres) == []


# --- manage.py check ------------------------------------------------------------------------


def test_it_fails_manage_py_check_when_redis_is_enabled_without_a_url():
    overrides = {**SAFE_REDIS, "DEBUG": True, "REDIS_ENABLED": True, "REDIS_URL": None}
    with override_settings(**overrides), pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    assert "(opsdash.E002) REDIS_ENABLED=true but REDIS_URL is not set." in str(excinfo.value)
    assert "HINT: Set REDIS_URL" in str(excinfo.value)


def test_it_passes_manage_py_check_when_redis_is_configured():
    overrides = {**SAFE_REDIS, "DEBUG": True, "REDIS_ENABLED": True}
    with override_settings(**overrides):
        call_command("check")
