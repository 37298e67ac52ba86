"""Incidents: overlapping alerts form one, it closes with its last alert, and its page tells
the story in one ordered timeline (transitions, notifications, acknowledgements, notes, switch
changes, breaker transitions, process starts and exits), with each rule's runbook link; the
charts' series carry the marks (flips, incidents, deploys)."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from monitoring.alerts import engine, incidents, runbook
from monitoring.alerts.rules import Rule, Sample
from monitoring.cache import controls
from monitoring.models import Incident, IncidentNote, MetricWindow, ProcessEvent, SwitchAudit
from tests.conftest import using_redis
from tests.monitoring.notification_support import (
    Lever,
    channel_settings,
    deliver_all,
    redis_rule,
    slack,
)
from tests.personas import signed_in, viewer

pytestmark = pytest.mark.django_db
SAMPLE = Sample(caching_enabled=True, redis={}, minute={}, five_minutes={})


def hit_rate_rule(lever: Lever) -> Rule:
    return Rule("cache_hit_rate_critical", "critical", "Hit rate low", lever, 0.3, False, 0.35, 0)


def test_it_groups_overlapping_alerts_and_closes_with_the_last_one():
    now = timezone.now()
    redis, hits = Lever(1.0), Lever(0.1)
    engine.evaluate([redis_rule(redis)], SAMPLE, now)
    engine.evaluate([hit_rate_rule(hits)], SAMPLE, now + timedelta(seconds=5))
    [incident] = Incident.objects.all()
    assert sorted(incident.alerts.values_list("rule", flat=True)) == [
        "cache_hit_rate_critical",
        "redis_connection_lost",
    ]
    assert incident.title == "Redis connection lost"
    redis.value = 0.0
    engine.evaluate([redis_rule(redis)], SAMPLE, now + timedelta(seconds=10))
    incident.refresh_from_db()
    assert incident.closed_at is None  # the hit-rate alert is still open
    hits.value = 0.9
    engine.evaluate([hit_rate_rule(hits)], SAMPLE, now + timedelta(seconds=20))
    incident.refresh_from_db()
    assert incident.closed_at == now + timedelta(seconds=20)
    redis.value = 1.0
    engine.evaluate([redis_rule(redis)], SAMPLE, now + timedelta(seconds=30))
    assert Incident.objects.count() == 2  # a later alert opens a new incident


def test_it_tells_the_whole_story_in_order(monkeypatch):
    t0 = timezone.now() - timedelta(minutes=5)
    ProcessEvent.objects.create(process="web-1:11", kind="start", role="app")
    ProcessEvent.objects.filter(process="web-1:11").update(at=t0 - timedelta(minutes=2))
    slack(monkeypatch, (200, "ok"))
    with channel_settings(), override_settings(ALERT_EMAILS=[]):
        [_, fired] = engine.evaluate([redis_rule(Lever(1.0))], SAMPLE, t0)
        deliver_all()
    alert = fired.alert
    engine.acknowledge(alert.pk, "olivia", "looking", t0 + timedelta(seconds=30))
    with using_redis("redis://127.0.0.1:1/0"), override_settings(REDIS_ENABLED=None):
        controls.flip(False, reason="Redis flapping", source="cli", actor="olivia")
    incidents.add_note(alert.incident_id, "olivia", "failing over to the replica")
    changed = (t0 + timedelta(seconds=10)).timestamp()
    MetricWindow.objects.create(
        process="web-1:11",
        started_at=t0,
        ended_at=t0 + timedelta(seconds=15),
        data={"breaker": {"changes": [[changed, "closed", "open"]], "state": "open"}},
    )
    entries = incidents.timeline(alert.incident)
    kinds = [entry.kind for entry in entries]
    assert kinds[0] == "process"
    assert set(kinds) == {
        "process",
        "alert",
        "notification",
        "breaker",
        "acknowledgement",
        "switch",
        "note",
    }
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    texts = [entry.text for entry in entries]
    assert "app process web-1:11 started" in texts
    assert "redis_connection_lost: opened → pending (value 1)" in texts
    assert "slack told of redis_connection_lost firing: sent (attempt 1)" in texts
    assert "breaker in web-1:11: closed → open" in texts
    assert "olivia acknowledged redis_connection_lost: “looking”" in texts
    assert "olivia (cli): turn caching off — Redis flapping" in texts
    assert "olivia: failing over to the replica" in texts
    alert_entry = next(e for e in entries if e.kind == "alert")
    assert alert_entry.link == "/dashboard/runbook/#rolling-back"


def test_it_leaves_out_what_happened_long_before():
    t0 = timezone.now()
    engine.evaluate([redis_rule(Lever(1.0))], SAMPLE, t0)
    ProcessEvent.objects.create(process="web-9:1", kind="exit", role="app")
    ProcessEvent.objects.filter(process="web-9:1").update(at=t0 - timedelta(minutes=11))
    incident = Incident.objects.get()
    assert [e for e in incidents.timeline(incident) if e.kind == "process"] == []


def test_it_links_each_rule_to_its_runbook_section():
    assert runbook.link("redis_connection_lost") == "/dashboard/runbook/#rolling-back"
    assert (
        runbook.link("response_time_high") == "/dashboard/runbook/#phase-3-validate-the-performance"
    )
    with override_settings(ALERT_RUNBOOK_URL="https://wiki.example.com/opsdash/rollout"):
        assert runbook.link("redis_memory_high") == (
            "https://wiki.example.com/opsdash/rollout#troubleshooting"
        )
    page = signed_in(viewer()).get("/dashboard/runbook/").content.decode()
    for rule in runbook.SECTIONS:
        assert f'id="{runbook.anchor(rule)}"' in page, rule


def test_it_shows_the_timeline_and_takes_notes_on_the_incident_page():
    engine.evaluate([redis_rule(Lever(1.0))], SAMPLE, timezone.now())
    incident = Incident.objects.get()
    sam = signed_in(viewer())
    response = sam.post(f"/dashboard/incidents/{incident.pk}/notes", {"text": "  paged the DBA "})
    assert response.status_code == 302
    assert IncidentNote.objects.get().text == "paged the DBA"
    assert sam.post(f"/dashboard/incidents/{incident.pk}/notes", {"text": " "}).status_code == 302
    assert IncidentNote.objects.count() == 1
    assert sam.post("/dashboard/incidents/999/notes", {"text": "x"}).status_code == 404
    page = sam.get(f"/dashboard/incidents/{incident.pk}/").content.decode()
    assert "sam: paged the DBA" in page
    assert "redis_connection_lost: opened → pending (value 1)" in page
    assert 'href="/dashboard/runbook/#rolling-back"' in page
    listing = sam.get("/dashboard/incidents/").content.decode()
    assert f'href="/dashboard/incidents/{incident.pk}/"' in listing


def test_it_marks_flips_incidents_and_deploys_on_the_charts_series():
    now = timezone.now()
    engine.evaluate([redis_rule(Lever(1.0))], SAMPLE, now - timedelta(minutes=3))
    ProcessEvent.objects.create(process="web-1:12", kind="start", role="app")
    with using_redis("redis://127.0.0.1:1/0"), override_settings(REDIS_ENABLED=None):
        controls.flip(False, reason="drill", source="cli", actor="olivia")
    body = signed_in(viewer()).get("/api/monitoring/metrics/series?minutes=15").json()
    assert [(m["kind"], m["label"]) for m in body["marks"]] == [
        ("switch", "turn caching off by olivia"),
        ("incident", f"incident #{Incident.objects.get().pk}: Redis connection lost"),
        ("deploy", "app web-1:12 start"),
    ]
    assert body["marks"][1]["until"] is None
    assert SwitchAudit.objects.count() == 1


def test_it_records_a_process_start_and_exit():
    from monitoring import runtime

    runtime._start_background(monitoring=False, role="app")
    runtime.stop(role="app")
    assert list(ProcessEvent.objects.order_by("id").values_list("kind", "role")) == [
        ("start", "app"),
        ("exit", "app"),
    ]
