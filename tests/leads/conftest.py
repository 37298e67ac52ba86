"""Fixtures of the leads tests that more than one module uses (each asks for them by name)."""

import pytest
from django.test import override_settings
from django.utils import timezone

from leads.models import Lead, Organization, PhoneNumber
from leads.webhooks.deferred import writer
from tests.conftest import turn_caching, using_redis
from tests.leads import initiation_support, post_call_support
from tests.leads.admin_support import ORG_NUMBER
from tests.redis_servers import RedisServer


@pytest.fixture
def post_call_settings():
    with override_settings(
        ELEVENLABS_WEBHOOK_SECRET=post_call_support.SECRET,
        ELEVENLABS_INITIATION_SECRET=initiation_support.SECRET,
        ELEVENLABS_INITIATION_HEADER="X-Webhook-Secret",
        WEBHOOK_VERIFY=True,
        WEBHOOK_MAX_AGE=30 * 60,
        WEBHOOK_MAX_CLOCK_SKEW=5 * 60,
        WEBHOOK_MAX_BODY_BYTES=1024 * 1024,
    ):
        yield


@pytest.fixture
def caching_on(shared_redis):
    """Caching on, against a real Redis (this test's keys only)."""
    turn_caching(True)
    yield shared_redis
    writer.drain()  # nothing deferred may outlive the test's tables


@pytest.fixture
def initiation_settings():
    with override_settings(
        ELEVENLABS_INITIATION_SECRET=initiation_support.SECRET,
        ELEVENLABS_INITIATION_HEADER="X-Webhook-Secret",
        WEBHOOK_VERIFY=True,
        WEBHOOK_MAX_BODY_BYTES=1024 * 1024,
        # Generous: these tests assert the answer's content, and a loaded machine must not
        # turn it into the fallback (above the hung cache mode's 0.5 s socket timeout, too).
        # The budget itself is tested with its own, short, value.
        INITIATION_TIME_BUDGET=5.0,
        AGENT_LANGUAGE="en",
    ):
        yield


@pytest.fixture
def frozen_now(monkeypatch):
    """timezone.now() is initiation_support.NOW everywhere (the view reads it through
    django.utils.timezone)."""
    monkeypatch.setattr(timezone, "now", lambda: initiation_support.NOW)
    return initiation_support.NOW


@pytest.fixture
def acme(db):
    org = Organization.objects.create(name="Acme Plumbing", timezone="America/New_York")
    PhoneNumber.objects.create(organization=org, e164=ORG_NUMBER, label="main")
    return org


@pytest.fixture
def leads(acme):
    return {
        "ada": Lead.objects.create(
            organization=acme, phone="+15551234567", name="Ada Lovelace", status="hot"
        ),
        "grace": Lead.objects.create(
            organization=acme, phone="+15559876543", name="Grace Hopper", status="new"
        ),
        "alan": Lead.objects.create(
            organization=acme, phone="+442079460958", name="Alan Turing", status="hot"
        ),
    }


@pytest.fixture
def private_redis(request):
    """A private redis-server (options from the test's `redis_args` marker), the gate on it,
    caching on, and settling off so a test can restart it at once."""
    marker = request.node.get_closest_marker("redis_args")
    server = RedisServer(args=marker.args if marker else ()).start()
    with (
        using_redis(server.url),
        override_settings(REDIS_SERVER_SETTLE_SECONDS=0, REDIS_BREAKER_COOLDOWN=0.2),
    ):
        turn_caching(True)
        yield server
    server.close()
