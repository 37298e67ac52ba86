"""`manage.py redis_validate`: against a healthy setup every check is listed and none fails;
against a broken Redis the verdict names the connection; the switch is flipped only when
allowed (and restored); the scratch rows are gone afterwards. Timings are not judged here (the
thresholds are opened wide): bench/ measures, and the speed-up rule is tested on fixed figures."""

import json
import re
from io import StringIO
from urllib.parse import urlsplit

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from leads.models import Conversation, Lead, Message, Organization, PhoneNumber
from leads.validation import speedup_outcome
from monitoring.alerts import lease
from monitoring.alerts.evaluator import LEASE
from monitoring.cache import gate, switch
from monitoring.models import Alert, CacheSwitch, Notification, SwitchAudit
from monitoring.validation import Report, Result
from tests.conftest import using_redis
from tests.redis_servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [
    ("infrastructure", "connection"),
    ("infrastructure", "switch"),
    ("infrastructure", "tls"),
    ("infrastructure", "latency"),
    ("infrastructure", "memory"),
    ("function", "call_context_cached"),
    ("function", "invalidation_on_write"),
    ("function", "generation_bump"),
    ("performance", "cached_read_speed"),
    ("resilience", "breaker_fallback"),
    ("monitoring", "evaluator"),
    ("monitoring", "notifications"),
]
# Timings are not what these tests judge.
WIDE_OPEN = ["--max-latency-ms", "10000", "--min-speedup", "0", "--samples", "5"]
LINE = re.compile(r"(PASS|WARN|FAIL|SKIP)  (\S+)\s+(\S+)\s+(.*) \(\d+ ms\)")


@pytest.fixture(autouse=True)
def quiet_deployment():
    """An evaluator holds the lease (a running deployment); no notification channel."""
    lease.acquire(LEASE, "web-1:4242", 600)
    with override_settings(
        REDIS_MONITORING_ENABLED=True, REDIS_ALERT_WEBHOOK_URL="", ALERT_EMAILS=[]
    ):
        yield


def validate(*args: str) -> tuple[str, str | None]:
    """(stdout, the CommandError's message or None)."""
    out = StringIO()
    try:
        call_command("redis_validate", *WIDE_OPEN, *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), None


def validate_json(*args: str) -> tuple[dict, str | None]:
    out, error = validate("--json", *args)
    return json.loads(out), error


def statuses(document: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in document["checks"]}


def memory_status(url: str) -> str:
    """What the memory check must say of this server (its configuration is not ours to set)."""
    info = redis.Redis.from_url(url, socket_timeout=2).info()
    sane = info["maxmemory"] and info["maxmemory_policy"].startswith(
        ("allkeys-lru", "allkeys-lfu", "volatile-")
    )
    return "pass" if sane else "warn"


def test_it_passes_a_healthy_setup_listing_every_check(shared_redis):
    assert urlsplit(shared_redis).hostname in ("127.0.0.1", "localhost")
    out, error = validate()
    lines = out.splitlines()
    assert error is None
    assert lines[0] == f"Validating {shared_redis}"
    results = [LINE.fullmatch(line).groups() for line in lines[1:13]]
    assert [(category, name) for _, category, name, _ in results] == CHECKS
    assert {name: status for status, _, name, _ in results} == {
        "connection": "PASS",
        "switch": "PASS",
        "tls": "SKIP",
        "latency": "PASS",
        "memory": memory_status(shared_redis).upper(),
        "call_context_cached": "PASS",
        "invalidation_on_write": "PASS",
        "generation_bump": "SKIP",
        "cached_read_speed": "PASS",
        "breaker_fallback": "PASS",
        "evaluator": "PASS",
        "notifications": "WARN",
    }
    details = {name: detail for _, _, name, detail in results}
    assert details["generation_bump"] == (
        "would flip the deployment's switch off and on, which empties the cache for every "
        "process: pass --allow-switch-flip to run it"
    )
    assert details["call_context_cached"] == (
        "a scratch lead's call context (10 messages) was stored; the next read ran 0 SQL queries"
    )
    assert details["evaluator"].startswith("alive: web-1:4242 holds the lease (until ")
    warnings = (
        ["memory", "notifications"] if memory_status(shared_redis) == "warn" else ["notifications"]
    )
    assert lines[13:] == [
        lines[13],
        f"warnings: {', '.join(warnings)}",
        "verdict: READY WITH WARNINGS",
    ]
    assert re.fullmatch(r"score: \d+% \(\d+ pass, \d+ warn, 0 fail, 2 skip\)", lines[13])


def test_it_leaves_no_scratch_rows_and_the_switch_as_it_was(shared_redis):
    before = switch.read_state()
    validate()
    for model in (Organization, PhoneNumber, Lead, Conversation, Message):
        assert model.objects.count() == 0, model.__name__
    after = CacheSwitch.objects.get()
    assert (after.enabled, after.generation) == (before.enabled, before.generation)
    assert SwitchAudit.objects.count() == 0
    # The resilience check used a gate of its own: this process's breaker never moved.
    assert gate.breaker.state == "closed"
    assert gate.stats.take_breaker_changes() == []
    assert "validation" not in gate.stats.snapshot()


def test_it_prints_one_json_document_with_the_verdict(shared_redis):
    document, error = validate_json()
    assert error is None
    assert document["redis"] == shared_redis
    assert document["verdict"] == "READY WITH WARNINGS"
    assert document["ready"] is True
    assert document["failed"] == []
    assert [(c["category"], c["name"]) for c in document["checks"]] == CHECKS
    assert set(document["checks"][0]) == {
        "name",
        "category",
        "status",
        "detail",
        "duration_ms",
        "weight",
    }
    assert document["counts"]["fail"] == 0
    assert 0 < document["score"] <= 1


def test_it_is_not_ready_when_redis_is_unreachable_and_names_the_connection():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with using_redis(url):
        document, error = validate_json()
    assert error == "NOT READY: connection"
    assert document["verdict"] == "NOT READY: connection"
    assert document["ready"] is False
    assert document["failed"] == ["connection"]
    assert statuses(document) == {
        "connection": "fail",
        "switch": "pass",
        "tls": "skip",
        "latency": "skip",
        "memory": "skip",
        "call_context_cached": "skip",
        "invalidation_on_write": "skip",
        "generation_bump": "skip",
        "cached_read_speed": "skip",
        "breaker_fallback": "pass",
        "evaluator": "pass",
        "notifications": "warn",
    }
    details = {check["name"]: check["detail"] for check in document["checks"]}
    assert details["connection"].startswith(f"connection refused: nothing listens on {url[8:-2]}")
    assert details["latency"] == "needs connection, which did not pass (fail)"
    assert Organization.objects.count() == 0


def test_it_prints_the_failing_verdict_in_text_too():
    with using_redis(f"redis://127.0.0.1:{free_port()}/0"):
        out, error = validate()
    assert error == "NOT READY: connection"
    assert out.splitlines()[-1] == "verdict: NOT READY: connection"


def test_it_fails_when_no_evaluator_holds_the_lease(shared_redis):
    lease.release(LEASE, "web-1:4242")
    document, error = validate_json()
    assert error == "NOT READY: evaluator"
    check = next(c for c in document["checks"] if c["name"] == "evaluator")
    assert check["status"] == "fail"
    assert check["detail"].startswith("no evaluator holds the lease")


def test_it_only_warns_about_the_evaluator_when_monitoring_is_off(shared_redis):
    lease.release(LEASE, "web-1:4242")
    with override_settings(REDIS_MONITORING_ENABLED=False):
        document, error = validate_json()
    assert error is None
    assert statuses(document)["evaluator"] == "warn"


def test_it_names_monitor_when_the_app_leaves_monitoring_to_it(shared_redis):
    lease.release(LEASE, "web-1:4242")
    with override_settings(MONITORING_IN_APP=False):
        document, _ = validate_json()
    check = next(c for c in document["checks"] if c["name"] == "evaluator")
    assert check["status"] == "fail"
    assert check["detail"] == (
        "no evaluator holds the lease: MONITORING_IN_APP=false leaves monitoring to "
        "`manage.py monitor`, and none runs on this database, so no alert would fire"
    )


def test_it_fails_when_a_channels_last_message_was_given_up_on(shared_redis):
    now = timezone.now()
    alert = Alert.objects.create(
        rule="redis_connection_lost",
        severity="critical",
        state="firing",
        summary="Redis down",
        threshold=0.5,
        started_at=now,
    )
    Notification.objects.create(
        alert=alert,
        channel="slack",
        event="firing",
        due_at=now,
        status="failed",
        attempts=1,
        last_error="HTTP 404: channel_not_found",
        finished_at=now,
    )
    with override_settings(REDIS_ALERT_WEBHOOK_URL="https://hooks.slack.test/x"):
        document, error = validate_json()
    assert error == "NOT READY: notifications"
    check = next(c for c in document["checks"] if c["name"] == "notifications")
    assert (check["status"], check["detail"]) == (
        "fail",
        "slack: last message given up (HTTP 404: channel_not_found)",
    )


def test_it_checks_what_the_cache_does_before_caching_is_turned_on(shared_redis):
    switch.set_caching(False, actor="alice", reason="rollout phase 1", source="cli")
    state = switch.read_state()
    document, error = validate_json()
    assert error is None
    assert document["verdict"] == "READY WITH WARNINGS"
    checks = {c["name"]: (c["status"], c["detail"]) for c in document["checks"]}
    assert checks["switch"] == (
        "warn",
        "caching is switched off (by alice: rollout phase 1); `manage.py redis_switch on` "
        "turns it on",
    )
    forced = " (caching forced on in this process only: the switch stays off)"
    assert checks["call_context_cached"] == (
        "pass",
        "a scratch lead's call context (10 messages) was stored; the next read ran 0 SQL "
        f"queries{forced}",
    )
    assert checks["invalidation_on_write"] == (
        "pass",
        f"after update_lead committed, the next read of its call context showed it{forced}",
    )
    assert checks["cached_read_speed"][0] == "pass"
    assert checks["cached_read_speed"][1].endswith(forced)
    assert checks["generation_bump"] == ("skip", "needs switch, which did not pass (warn)")
    # Only this process cached, and only while it ran: the switch is as it was (the gate only
    # noted which Redis server the generation lives on).
    assert switch.read_state().as_dict() == state.as_dict()
    assert SwitchAudit.objects.count() == 1
    assert gate.switch is switch.view
    assert Organization.objects.count() == 0


def test_it_skips_what_the_cache_does_while_caching_is_pinned_off(shared_redis):
    with override_settings(REDIS_ENABLED=False):
        document, error = validate_json()
    assert error is None
    checks = {c["name"]: (c["status"], c["detail"]) for c in document["checks"]}
    assert checks["switch"][0] == "warn"
    pinned = (
        "skip",
        "caching cannot run here: caching is pinned off by the environment (REDIS_ENABLED=false)",
    )
    for name in ("call_context_cached", "invalidation_on_write", "cached_read_speed"):
        assert checks[name] == pinned
    # Nothing was written, so no invalidation was skipped and no generation is owed.
    assert CacheSwitch.objects.get().invalidations_skipped is False


def test_it_checks_the_generation_bump_only_when_allowed_and_restores_the_switch(shared_redis):
    generation = switch.read_state().generation
    document, error = validate_json("--allow-switch-flip")
    assert error is None
    check = next(c for c in document["checks"] if c["name"] == "generation_bump")
    assert (check["status"], check["detail"]) == (
        "pass",
        f"off, a write, on: generation {generation} -> {generation + 1}; entries cached before "
        "were unreachable and the write showed (switch restored: on)",
    )
    row = CacheSwitch.objects.get()
    assert (row.enabled, row.generation) == (True, generation + 1)
    audits = list(SwitchAudit.objects.order_by("id"))
    assert [(a.action, a.old_enabled, a.new_enabled, a.source) for a in audits] == [
        ("disable", True, False, "cli"),
        ("enable", False, True, "cli"),
    ]
    assert all(a.actor.endswith(" (redis_validate)") for a in audits)
    assert Organization.objects.count() == 0


def test_it_accepts_an_evicting_memory_policy_with_a_limit(redis_server):
    redis_server.client().config_set("maxmemory", "64mb")
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    document, _ = validate_json("--skip", "evaluator")
    memory = next(c for c in document["checks"] if c["name"] == "memory")
    assert memory["status"] == "pass"
    assert re.fullmatch(
        r"\d+\.\d (KB|MB) used of 64\.0 MB \(\d+ %\), policy allkeys-lru", memory["detail"]
    )


def test_it_warns_about_a_cache_that_cannot_evict(redis_server):
    redis_server.client().config_set("maxmemory", "0")
    redis_server.client().config_set("maxmemory-policy", "noeviction")
    document, error = validate_json()
    assert error is None
    memory = next(c for c in document["checks"] if c["name"] == "memory")
    assert memory["status"] == "warn"
    assert memory["detail"].endswith(
        "no maxmemory limit, policy noeviction: maxmemory is not set: Redis grows until the "
        "host runs out of memory; noeviction does not evict: once full, every store fails; use "
        "allkeys-lru, allkeys-lfu or a volatile-* policy"
    )
    assert "memory" in document["warnings"]


def test_it_skips_a_check_on_request(shared_redis):
    lease.release(LEASE, "web-1:4242")
    document, error = validate_json("--skip", "evaluator")
    assert error is None
    check = next(c for c in document["checks"] if c["name"] == "evaluator")
    assert (check["status"], check["detail"]) == ("skip", "skipped by --skip")


def test_it_refuses_to_skip_an_unknown_check():
    out, error = validate("--skip", "nonsense")
    assert error.startswith("unknown check nonsense; the checks are: connection, switch, tls,")
    assert out == ""


# --- the rules, on fixed figures ----------------------------------------------------------


def test_it_passes_a_speedup_at_the_threshold_and_fails_below_it():
    at = speedup_outcome([1.0, 1.0, 2.0], [3.0, 3.0, 1.0], 3.0)
    assert (at.status, at.detail) == (
        "pass",
        "median of 3: cached 1.000 ms, database 3.000 ms (3.0x; needs 3x)",
    )
    below = speedup_outcome([1.0], [2.9], 3.0)
    assert (below.status, below.detail) == (
        "fail",
        "median of 1: cached 1.000 ms, database 2.900 ms (2.9x; needs 3x)",
    )


def result(name: str, status: str, weight: int = 1) -> Result:
    return Result(name, "infrastructure", status, "", 0.0, weight)


def test_it_scores_passes_fully_warnings_by_half_and_leaves_skips_out():
    report = Report(
        [
            result("a", "pass", 3),
            result("b", "warn", 2),
            result("c", "skip", 5),
            result("d", "fail", 1),
        ]
    )
    assert report.score == round((3 + 1) / 6, 3)
    assert report.verdict == "NOT READY: d"
    assert Report([result("a", "pass"), result("b", "warn")]).verdict == "READY WITH WARNINGS"
    assert Report([result("a", "pass"), result("b", "skip")]).verdict == "READY"
    assert Report([]).score == 0.0
