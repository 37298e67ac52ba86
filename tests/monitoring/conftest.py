"""Fixtures of the monitoring tests that more than one module uses (each asks for them by name)."""

import pytest
import redis
from django.test import override_settings

from tests.conftest import using_redis
from tests.monitoring.dashboard_support import UNREACHABLE_REDIS
from tests.monitoring.evaluator_support import slack_catching
from tests.personas import flipper, plain_user, signed_in, viewer


@pytest.fixture
def slack_catcher():
    """A local stand-in for Slack's incoming webhook (evaluator_support.SlackCatcher)."""
    with slack_catching() as catcher:
        yield catcher


@pytest.fixture
def shared_client(shared_redis) -> redis.Redis:
    return redis.Redis.from_url(shared_redis, socket_timeout=2)


@pytest.fixture
def redis_configured():
    """A runtime switch (REDIS_URL set, REDIS_ENABLED unset) for tests that need no Redis itself."""
    with using_redis(UNREACHABLE_REDIS), override_settings(REDIS_ENABLED=None):
        yield


@pytest.fixture
def olivia():
    """Signed in as Olivia, who may flip the switch."""
    return signed_in(flipper("olivia"))


@pytest.fixture
def sam():
    """Signed in as Sam, who may look at the dashboard but not flip."""
    return signed_in(viewer("sam"))


@pytest.fixture
def mark():
    """Signed in as Mark, who is not staff."""
    return signed_in(plain_user("mark"))
