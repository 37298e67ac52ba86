"""Secrets: none is written in the code; `serve` makes this install's own on its first start;
a public bind without them (or with DEBUG on) is refused; `check --deploy` names every one
missing; and none is ever shown, masked URLs included."""

import json
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test import Client, override_settings

from monitoring.redaction import masked_url
from opsdash.management.commands import serve

ROOT = Path(__file__).resolve().parents[2]


def test_it_has_no_webhook_secret_written_in_the_code():
    """No default value for a secret setting is a literal: each comes from the environment or
    from this install's own file."""
    settings_source = (ROOT / "opsdash" / "settings.py").read_text()
    for name in ("ELEVENLABS_INITIATION_SECRET", "ELEVENLABS_WEBHOOK_SECRET", "TWILIO_AUTH_TOKEN"):
        found = re.search(rf'{name} = env\.str\(\s*"{name}", default=([^\n]+)', settings_source)
        assert found, name
        assert not found.group(1).lstrip().startswith(('"', "'")), found.group(0)
    assert "opsdash-local" not in settings_source


def test_it_makes_random_secrets_on_the_first_start_and_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setattr(serve.settings, "VAR_DIR", tmp_path, raising=False)
    unset = dict.fromkeys(
        ("ELEVENLABS_INITIATION_SECRET", "ELEVENLABS_WEBHOOK_SECRET", "TWILIO_AUTH_TOKEN"), ""
    )
    with override_settings(
        VAR_DIR=tmp_path, LOCAL_SECRETS_FILE=tmp_path / "webhook-secrets.json", **unset
    ):
        command = serve.Command()
        first = command._ensure_local_secrets()
        again = command._ensure_local_secrets()
        stored = json.loads((tmp_path / "webhook-secrets.json").read_text())
    assert first == again == stored
    assert set(stored) == {
        "ELEVENLABS_INITIATION_SECRET",
        "ELEVENLABS_WEBHOOK_SECRET",
        "TWILIO_AUTH_TOKEN",
    }
    assert all(len(value) >= 40 for value in stored.values())
    assert len(set(stored.values())) == 3
    assert (tmp_path / "webhook-secrets.json").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_it_serves_on_loopback_whatever_the_settings(host):
    assert serve.bind_problems(host, {"TWILIO_AUTH_TOKEN": ""}) == []


def test_it_refuses_a_public_bind_with_debug_on_or_secrets_unset():
    with override_settings(DEBUG=True):
        problems = serve.bind_problems("0.0.0.0", {"TWILIO_AUTH_TOKEN": "", "X": "set"})
    assert [p.split(":")[0] for p in problems] == ["opsdash.E006", "opsdash.E007"]
    with override_settings(DEBUG=False):
        assert serve.bind_problems("0.0.0.0", {"TWILIO_AUTH_TOKEN": "t"}) == []


@pytest.mark.django_db
def test_it_refuses_to_serve_publicly_with_debug_on(monkeypatch):
    monkeypatch.setattr(serve.Command, "_serve", lambda *a: pytest.fail("it served"))
    with override_settings(DEBUG=True), pytest.raises(CommandError, match="DEBUG is on"):
        call_command("serve", "--host", "0.0.0.0", "--no-redis")


def test_it_names_every_missing_secret_in_check_deploy():
    with (
        override_settings(
            ELEVENLABS_INITIATION_SECRET="",
            ELEVENLABS_WEBHOOK_SECRET="",
            TWILIO_AUTH_TOKEN="",
            MONITORING_TOKEN="",
        ),
        pytest.raises(SystemCheckError) as raised,
    ):
        call_command("check", "--deploy", "--fail-level", "ERROR")
    message = str(raised.value)
    assert "opsdash.E005" in message
    for name in (
        "ELEVENLABS_INITIATION_SECRET",
        "ELEVENLABS_WEBHOOK_SECRET",
        "TWILIO_AUTH_TOKEN",
        "MONITORING_TOKEN",
    ):
        assert name in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache:6380/0", "rediss://app:***@cache:6380/0"),
        ("unix:///run/redis.sock?password=s3cret&db=1", "unix:///run/redis.sock?password=***&db=1"),
        (
            "redis://cache/0?username=app&Password=s3cret",
            "redis://cache/0?username=***&Password=***",
        ),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_it_masks_every_credential_form(url, shown):
    assert masked_url(url) == shown


@pytest.mark.django_db
def test_it_never_shows_the_redis_password_in_the_public_health_answer():
    from monitoring.cache import gate
    from tests.conftest import using_redis

    url = "unix:///tmp/opsdash-no-such.sock?password=s3cret-in-query"
    with using_redis(url):
        gate.reset()
        response = Client().get("/api/monitoring/health/redis")
    gate.reset()
    assert "s3cret-in-query" not in response.content.decode()
    assert "password=***" in response.content.decode()


def test_it_reads_this_installs_secrets_for_every_process_on_the_one_machine_default(
    tmp_path, monkeypatch
):
    """What `demo traffic` (or the daphne child) gets from settings: the file serve made."""
    import opsdash.settings as project_settings

    stored = {name: f"{name.lower()}-value" for name in project_settings.LOCAL_SECRET_NAMES}
    (tmp_path / "webhook-secrets.json").write_text(json.dumps(stored))
    monkeypatch.setattr(project_settings, "LOCAL_SECRETS_FILE", tmp_path / "webhook-secrets.json")
    monkeypatch.setattr(project_settings, "DATABASE_IS_POSTGRES", False)
    assert project_settings._local_secrets() == stored
    monkeypatch.setattr(project_settings, "DATABASE_IS_POSTGRES", True)
    assert project_settings._local_secrets() == {}  # production: the environment only
