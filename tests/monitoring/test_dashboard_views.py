"""The ops dashboard's pages and actions, as staff, as staff allowed to flip the switch, as a
logged-in user who is not staff, and anonymously: who sees what, what a flip and a flush write,
and what every refusal leaves unwritten. Plus the JSON the pages poll and chart from."""

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import Client, override_settings
from django.utils import timezone

from monitoring import events
from monitoring.cache import gate, switch
from monitoring.metrics import series as metric_series
from monitoring.metrics import store
from monitoring.models import (
    Alert,
    AlertTransition,
    CacheSwitch,
    MetricWindow,
    NotificationDelivery,
    SwitchAudit,
)
from tests.conftest import using_redis
from tests.personas import flipper, plain_user, signed_in, viewer

pytestmark = pytest.mark.django_db

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # configured, never needed by these pages
TILES = ["database", "redis", "switch", "breaker", "channel-layer", "evaluator"]
PAGES = ["/dashboard/", "/dashboard/alerts/", "/dashboard/switch/"]
PINNED = "caching is pinned off by the environment (REDIS_ENABLED=false)"
UNCONFIGURED = "no Redis is configured (REDIS_URL is not set)"
CANNOT_FLIP = [({"REDIS_ENABLED": False}, PINNED), ({"REDIS_URL": None}, UNCONFIGURED)]


class Page(HTMLParser):
    """The elements of a page that carry a data-testid: their attributes and their text."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: dict[str, dict] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        testid = attrs.get("data-testid")
        if testid is not None:
            self.elements[testid] = {"tag": tag, "attrs": attrs, "text": ""}
        if tag not in self.VOID:
            self._open.append((tag, testid))

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                return

    def handle_data(self, data):
        for _, testid in self._open:
            if testid is not None:
                self.elements[testid]["text"] += data

    def __contains__(self, testid: str) -> bool:
        return testid in self.elements

    def text(self, testid: str) -> str:
        return " ".join(self.elements[testid]["text"].split())

    def attrs(self, testid: str) -> dict:
        return self.elements[testid]["attrs"]

    def ids(self, prefix: str) -> list[str]:
        return [testid for testid in self.elements if testid.startswith(prefix)]


def page(response) -> Page:
    assert response.status_code == 200, response.status_code
    return Page(response.content.decode())


def flash(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture(autouse=True)
def redis_configured():
    """A runtime switch (REDIS_URL set, REDIS_ENABLED unset); no test here needs Redis itself."""
    with using_redis(UNREACHABLE_REDIS), override_settings(REDIS_ENABLED=None):
        yield


@pytest.fixture
def olivia():
    return signed_in(flipper("olivia"))


@pytest.fixture
def sam():
    return signed_in(viewer("sam"))


@pytest.fixture
def mark():
    return signed_in(plain_user("mark"))


# --- who gets in ----------------------------------------------------------------------------


def test_it_redirects_the_site_root_to_the_dashboard(olivia):
    response = olivia.get("/")
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")


@pytest.mark.parametrize("path", PAGES)
def test_it_sends_anonymous_visitors_to_the_login_page(path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.parametrize("path", PAGES)
def test_it_forbids_logged_in_users_who_are_not_staff(mark, path):
    assert mark.get(path).status_code == 403


def test_it_serves_a_login_page_that_leads_back_to_the_dashboard():
    flipper("olivia", password="pw")
    client = Client()
    assert "login-form" in page(client.get("/accounts/login/?next=/dashboard/"))
    response = client.post(
        "/accounts/login/", {"username": "olivia", "password": "pw", "next": "/dashboard/"}
    )
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")
    assert client.get("/dashboard/").status_code == 200


# --- the overview ---------------------------------------------------------------------------


def test_it_renders_every_health_tile_with_its_status(sam):
    overview = page(sam.get("/dashboard/"))
    assert [f"tile-{name}" in overview for name in TILES] == [True] * len(TILES)
    assert overview.attrs("tile-database")["data-status"] == "pass"
    assert overview.text("tile-database-status") == "pass"
    # Caching is on and its Redis does not answer: every read still comes from the database
    # (the deployment's health is "warn"), but the tile shows the incident red.
    assert overview.attrs("tile-redis")["data-status"] == "fail"
    assert overview.text("tile-redis-detail").startswith("unreachable: ")
    assert overview.attrs("tile-breaker")["class"] == "tile tile--pass"
    assert overview.text("tile-channel-layer-detail") == "InMemoryChannelLayer"
    assert overview.text("tile-evaluator-detail") == "no evaluator holds the lease"
    assert overview.text("health-status") == "warn"


def test_it_shows_the_switch_with_its_source_generation_and_last_change(sam):
    switch.set_caching(False, actor="ops-cli", reason="p99 doubled", source="cli")
    overview = page(sam.get("/dashboard/"))
    assert overview.text("switch-state") == "OFF"
    assert overview.text("switch-source") == "runtime switch"
    assert overview.text("switch-generation") == "1"
    assert overview.text("switch-changed-by") == "ops-cli"
    assert overview.text("switch-reason") == "p99 doubled"
    changed_at = CacheSwitch.objects.get().changed_at
    assert overview.attrs("switch-changed-at")["datetime"] == changed_at.isoformat()
    assert overview.text("switch-badge") == "caching off"


def test_it_offers_the_switch_and_the_flush_to_a_user_with_the_permission(olivia):
    overview = page(olivia.get("/dashboard/"))
    assert "hidden" not in overview.attrs("switch-off-button")
    assert "hidden" in overview.attrs("switch-on-button")
    assert "disabled" not in overview.attrs("flush-button")
    assert overview.attrs("switch-off-button")["commandfor"] == "switch-off-dialog"
    assert overview.attrs("switch-off-form")["action"] == "/dashboard/switch/flip"
    assert overview.attrs("flush-form")["action"] == "/dashboard/cache/flush"
    assert "required" in overview.attrs("switch-off-reason")
    assert "switch-no-permission" not in overview


def test_it_shows_the_state_but_no_button_without_the_permission(sam):
    overview = page(sam.get("/dashboard/"))
    assert overview.text("switch-state") == "ON"
    assert "switch-no-permission" in overview
    assert overview.ids("switch-off") == overview.ids("switch-on") == []
    assert overview.ids("flush") == []


@pytest.mark.parametrize(("overrides", "why"), CANNOT_FLIP)
def test_it_disables_the_buttons_with_an_explanation_when_the_switch_cannot_flip(
    olivia, overrides, why
):
    with override_settings(**overrides):
        overview = page(olivia.get("/dashboard/"))
    assert "disabled" in overview.attrs("switch-on-button")
    assert "disabled" in overview.attrs("flush-button")
    assert overview.text("switch-unavailable") == (
        f"Disabled: {why}. Change the environment and restart to use the switch."
    )
    assert overview.ids("switch-on-form") == overview.ids("flush-form") == []


# --- flipping the switch --------------------------------------------------------------------


def test_it_turns_caching_off_through_the_service_and_audits_it(olivia):
    response = olivia.post("/dashboard/switch/flip", {"enabled": "off", "reason": "p99 doubled"})

    assert (response.status_code, response["Location"]) == (302, "/dashboard/#switch")
    audit = SwitchAudit.objects.get()
    assert (audit.actor, audit.action, audit.source, audit.reason) == (
        "olivia",
        "disable",
        "dashboard",
        "p99 doubled",
    )
    assert (audit.old_enabled, audit.new_enabled, audit.generation) == (True, False, 1)
    assert switch.read_state().enabled is False


def test_it_bumps_the_generation_when_turning_caching_back_on(olivia):
    olivia.post(
        "/dashboard/switch/flip", {"enabled": "off", "reason": "Redis upgrade"}, follow=True
    )
    response = olivia.post(
        "/dashboard/switch/flip", {"enabled": "on", "reason": "upgrade done"}, follow=True
    )

    assert flash(response) == ["Caching is now on (generation 2)."]
    assert list(SwitchAudit.objects.order_by("id").values_list("action", "generation")) == [
        ("disable", 1),
        ("enable", 2),
    ]
    assert page(response).text("switch-generation") == "2"


def test_it_tells_every_open_dashboard_about_a_flip(olivia, django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.DASHBOARD_GROUP, channel)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            olivia.post("/dashboard/switch/flip", {"enabled": "off", "reason": "incident 7"})
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)(events.DASHBOARD_GROUP, channel)
    assert (message["type"], message["event"]) == ("dashboard.event", "switch.changed")
    payload = message["payload"]
    assert (payload["action"], payload["enabled"], payload["changed_by"], payload["reason"]) == (
        "disable",
        False,
        "olivia",
        "incident 7",
    )


def test_it_forbids_a_flip_to_staff_without_the_permission(sam):
    response = sam.post("/dashboard/switch/flip", {"enabled": "off", "reason": "curious"})
    assert response.status_code == 403
    assert SwitchAudit.objects.count() == 0
    assert switch.read_state().enabled is True


def test_it_sends_an_anonymous_flip_to_the_login_page():
    response = Client().post("/dashboard/switch/flip", {"enabled": "off", "reason": "x"})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert SwitchAudit.objects.count() == 0


@pytest.mark.parametrize("reason", ["", "   "])
def test_it_refuses_a_flip_without_a_reason(olivia, reason):
    response = olivia.post(
        "/dashboard/switch/flip", {"enabled": "off", "reason": reason}, follow=True
    )
    assert flash(response) == ["Nothing changed. A reason is required: say why, for the audit log."]
    assert SwitchAudit.objects.count() == 0
    assert switch.read_state().enabled is True


def test_it_refuses_a_forged_flip_without_the_csrf_token():
    client = signed_in(flipper("olivia"), enforce_csrf_checks=True)
    response = client.post("/dashboard/switch/flip", {"enabled": "off", "reason": "forged"})
    assert response.status_code == 403
    assert SwitchAudit.objects.count() == 0


def test_it_accepts_a_flip_that_carries_the_csrf_token():
    client = signed_in(flipper("olivia"), enforce_csrf_checks=True)
    assert client.get("/dashboard/").status_code == 200  # the page's forms set the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/dashboard/switch/flip",
        {"enabled": "off", "reason": "real", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert SwitchAudit.objects.get().reason == "real"


def test_it_answers_405_to_a_get_of_an_action(olivia):
    assert olivia.get("/dashboard/switch/flip").status_code == 405
    assert olivia.get("/dashboard/cache/flush").status_code == 405


@pytest.mark.parametrize(("overrides", "why"), CANNOT_FLIP)
def test_it_refuses_a_flip_the_environment_does_not_allow(olivia, overrides, why):
    with override_settings(**overrides):
        response = olivia.post(
            "/dashboard/switch/flip", {"enabled": "on", "reason": "try"}, follow=True
        )
    assert flash(response) == [f"The switch cannot be flipped: {why}."]
    assert SwitchAudit.objects.count() == 0


# --- flushing the cache ---------------------------------------------------------------------


def test_it_flushes_the_cache_by_bumping_the_generation(olivia):
    response = olivia.post("/dashboard/cache/flush", {"reason": "bad prices cached"}, follow=True)

    assert flash(response) == ["Cache flushed: now generation 2."]
    audit = SwitchAudit.objects.get()
    assert (audit.actor, audit.action, audit.source, audit.reason, audit.generation) == (
        "olivia",
        "flush",
        "dashboard",
        "bad prices cached",
        2,
    )
    state = switch.read_state()
    assert (state.enabled, state.generation) == (True, 2)


def test_it_forbids_a_flush_to_staff_without_the_permission(sam):
    assert sam.post("/dashboard/cache/flush", {"reason": "curious"}).status_code == 403
    assert switch.read_state().generation == 1


def test_it_refuses_a_forged_flush_without_the_csrf_token():
    client = signed_in(flipper("olivia"), enforce_csrf_checks=True)
    assert client.post("/dashboard/cache/flush", {"reason": "forged"}).status_code == 403
    assert switch.read_state().generation == 1


def test_it_refuses_a_flush_without_a_reason(olivia):
    response = olivia.post("/dashboard/cache/flush", {"reason": " "}, follow=True)
    assert flash(response) == ["Nothing flushed. A reason is required: say why, for the audit log."]
    assert switch.read_state().generation == 1


def test_it_refuses_a_flush_while_the_environment_pins_caching_off(olivia):
    with override_settings(REDIS_ENABLED=False):
        response = olivia.post("/dashboard/cache/flush", {"reason": "try"}, follow=True)
    assert flash(response) == [f"The cache cannot be flushed: {PINNED}."]
    assert SwitchAudit.objects.count() == 0


# --- alerts ---------------------------------------------------------------------------------


def make_alert(rule: str, severity: str, state: str, started: timedelta, resolved=None) -> Alert:
    now = timezone.now()
    return Alert.objects.create(
        rule=rule,
        severity=severity,
        state=state,
        summary=f"{rule} summary",
        value=0.2,
        threshold=0.3,
        started_at=now - started,
        fired_at=now - started if state != "pending" else None,
        resolved_at=now - resolved if resolved is not None else None,
    )


@pytest.fixture
def alerts():
    return {
        "firing": make_alert("hit_rate_critical", "critical", "firing", timedelta(minutes=10)),
        "pending": make_alert("response_time_warning", "warning", "pending", timedelta(minutes=1)),
        "recent": make_alert(
            "redis_memory_warning", "warning", "resolved", timedelta(hours=3), timedelta(hours=2)
        ),
        "old": make_alert(
            "redis_connection_lost", "critical", "resolved", timedelta(days=3), timedelta(days=2)
        ),
    }


def listed(response, alerts) -> list[str]:
    names = {f"alert-row-{alert.id}": name for name, alert in alerts.items()}
    return [names[testid] for testid in page(response).ids("alert-row-")]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["pending", "firing", "recent", "old"]),
        ("?state=active", ["pending", "firing"]),
        ("?state=resolved", ["recent", "old"]),
        ("?severity=critical", ["firing", "old"]),
        ("?state=all&severity=warning", ["pending", "recent"]),
        ("?period=24h", ["pending", "firing", "recent"]),
        ("?period=1h", ["pending", "firing"]),
        ("?state=resolved&severity=warning&period=24h", ["recent"]),
    ],
)
def test_it_filters_alerts_by_state_severity_and_time(sam, alerts, query, expected):
    assert listed(sam.get(f"/dashboard/alerts/{query}"), alerts) == expected


def test_it_ignores_filters_it_does_not_understand(sam, alerts):
    response = sam.get("/dashboard/alerts/?state=bogus&severity=loud")
    assert listed(response, alerts) == ["pending", "firing", "recent", "old"]
    assert "alert-filter-error" in page(response)


def test_it_shows_an_alerts_transitions_and_notification_deliveries(sam, alerts):
    alert = alerts["firing"]
    pending = AlertTransition.objects.create(
        alert=alert, at=alert.started_at, from_state="", to_state="pending", value=0.2
    )
    fired = AlertTransition.objects.create(
        alert=alert, at=alert.fired_at, from_state="pending", to_state="firing", value=0.1
    )
    sent = NotificationDelivery.objects.create(
        alert=alert, channel="slack", event="firing", attempt=1, status="sent"
    )
    rejected = NotificationDelivery.objects.create(
        alert=alert, channel="email", event="firing", attempt=1, status="rejected", error="550"
    )

    detail = page(sam.get(f"/dashboard/alerts/{alert.id}/"))

    assert detail.ids("transition-") == [f"transition-{pending.id}", f"transition-{fired.id}"]
    assert detail.ids("delivery-") == [f"delivery-{rejected.id}", f"delivery-{sent.id}"]
    assert detail.attrs(f"delivery-{rejected.id}")["data-status"] == "rejected"
    assert detail.text("alert-state") == "firing"


def test_it_lists_the_active_alerts_on_the_overview_with_an_acknowledge_button(sam, alerts):
    overview = page(sam.get("/dashboard/"))
    assert overview.ids("alert-ack-") == [
        f"alert-ack-{alerts['pending'].id}",
        f"alert-ack-{alerts['firing'].id}",
    ]
    assert overview.text("active-alert-count") == "2"
    assert "hidden" in overview.attrs("no-active-alerts")


def test_it_acknowledges_an_alert_and_returns_to_the_page_it_came_from(sam, alerts):
    alert = alerts["firing"]
    response = sam.post(
        f"/dashboard/alerts/{alert.id}/acknowledge", {"note": "on it", "next": "/dashboard/"}
    )
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledgement_note) == ("sam", "on it")
    overview = page(sam.get("/dashboard/"))
    assert "hidden" in overview.attrs(f"ack-form-{alert.id}")
    assert overview.text(f"acknowledged-{alert.id}") == "Acknowledged by sam"


def test_it_never_redirects_an_acknowledgement_off_site(sam, alerts):
    alert = alerts["pending"]
    response = sam.post(
        f"/dashboard/alerts/{alert.id}/acknowledge", {"next": "https://evil.example/"}
    )
    assert response["Location"] == f"/dashboard/alerts/{alert.id}/"


def test_it_answers_404_for_an_unknown_alert(sam):
    assert sam.get("/dashboard/alerts/999/").status_code == 404
    assert sam.post("/dashboard/alerts/999/acknowledge").status_code == 404


# --- switch history -------------------------------------------------------------------------


def test_it_lists_the_switch_audit_log_newest_first(sam):
    switch.set_caching(False, actor="alice (cli)", reason="Redis upgrade", source="cli")
    switch.set_caching(True, actor="bob", reason="upgrade done", source="admin")
    gate.flush(actor="carol", reason="bad data cached", source="dashboard")
    audits = list(SwitchAudit.objects.order_by("id"))

    history = page(sam.get("/dashboard/switch/"))

    assert history.ids("audit-") == [
        testid
        for audit in reversed(audits)
        for testid in (f"audit-{audit.id}", f"audit-{audit.id}-actor", f"audit-{audit.id}-reason")
    ]
    newest = audits[-1]
    assert history.text(f"audit-{newest.id}-actor") == "carol"
    assert history.text(f"audit-{newest.id}-reason") == "bad data cached"
    assert history.attrs(f"audit-{newest.id}")["data-action"] == "flush"
    assert history.attrs(f"audit-{audits[0].id}")["data-source"] == "cli"


def test_it_says_so_when_the_switch_never_changed(sam):
    assert "switch-audit-empty" in page(sam.get("/dashboard/switch/"))


# --- the JSON the pages poll ----------------------------------------------------------------


def test_it_answers_the_stored_switch_state_for_polling(sam):
    switch.set_caching(False, actor="ops", reason="incident", source="cli")
    body = sam.get("/api/monitoring/switch").json()
    assert (body["enabled"], body["source"], body["generation"], body["changed_by"]) == (
        False,
        "runtime",
        1,
        "ops",
    )
    assert (body["can_flip"], body["why_unavailable"], body["breaker"]) == (True, "", "closed")


def test_it_says_why_the_switch_cannot_flip_in_the_polled_state(sam):
    with override_settings(REDIS_ENABLED=False):
        body = sam.get("/api/monitoring/switch").json()
    assert (body["enabled"], body["source"], body["can_flip"]) == (False, "environment", False)
    assert body["why_unavailable"] == PINNED


def test_it_answers_401_to_anonymous_polls():
    assert Client().get("/api/monitoring/switch").status_code == 401
    assert Client().get("/api/monitoring/metrics/series").status_code == 401


def window(process: str, ended: datetime, requests: dict, cache: dict, server=None) -> None:
    data = {"requests": requests, "cache": cache, "counters": {}}
    if server is not None:
        data["server"] = server
    MetricWindow.objects.create(
        process=process, started_at=ended - timedelta(seconds=5), ended_at=ended, data=data
    )


def group(count: int, errors: int, bucket: int) -> dict:
    buckets = [0] * 15
    buckets[bucket] = count
    return {
        "count": count,
        "errors": errors,
        "status": {"2xx": count - errors, "5xx": errors},
        "latency_sum_ms": 3.0 * count,
        "latency_max_ms": 4.0,
        "buckets": buckets,
        "sql": 0,
    }


def test_it_charts_every_process_in_equal_buckets():
    now = datetime(2026, 3, 2, 15, 0, 7, tzinfo=UTC)  # the bucket ending 15:00:15 is still open
    bucket_one = datetime(2026, 3, 2, 14, 59, 50, tzinfo=UTC)  # in (14:59:45, 15:00:00]
    window("a:1", bucket_one, {"webhook_sms": group(10, 1, 2)}, {"lead": {"hits": 3, "misses": 1}})
    window("b:2", bucket_one, {"dashboard": group(5, 0, 2)}, {"lead": {"hits": 1, "misses": 3}})
    server = {"at": 1.0, "connected": True, "latency_ms": 0.4, "used_memory_bytes": 2048}
    window("a:1", bucket_one - timedelta(seconds=20), {}, {}, server=server)  # (14:59:15, :30]
    window("a:1", now, {"webhook_sms": group(99, 0, 2)}, {})  # the open bucket: left out

    doc = metric_series.series(minutes=1, step_seconds=15, now=now)

    assert (doc["minutes"], doc["step_seconds"]) == (1, 15)
    assert [p["t"] for p in doc["points"]] == [
        "2026-03-02T14:59:15+00:00",
        "2026-03-02T14:59:30+00:00",
        "2026-03-02T14:59:45+00:00",
        "2026-03-02T15:00:00+00:00",
    ]
    last = doc["points"][-1]
    assert (last["requests"], last["requests_per_second"], last["error_rate"]) == (15, 1.0, 0.0667)
    assert (last["hit_rate"], last["lookups"]) == (0.5, 8)
    assert set(last["route_groups"]) == {"webhook_sms", "dashboard"}
    assert last["route_groups"]["dashboard"]["requests_per_second"] == 0.333
    assert last["p95_ms"] == 4.0  # never above the slowest request
    quiet = doc["points"][1]
    assert (quiet["requests"], quiet["error_rate"], quiet["hit_rate"]) == (0, None, None)
    assert (quiet["redis_ping_ms"], quiet["redis_memory_bytes"]) == (0.4, 2048)
    assert doc["points"][0]["redis_ping_ms"] is None


def test_it_serves_the_chart_series_to_staff(sam):
    body = sam.get("/api/monitoring/metrics/series?minutes=2&step=30").json()
    assert (body["minutes"], body["step_seconds"], len(body["points"])) == (2, 30, 4)


@pytest.mark.parametrize("query", ["minutes=0", "minutes=61", "step=4", "step=x"])
def test_it_refuses_chart_series_it_cannot_draw(sam, query):
    response = sam.get(f"/api/monitoring/metrics/series?{query}")
    assert response.status_code == 400
    assert "error" in response.json()


def test_it_keeps_the_evaluators_redis_sample_for_the_next_window():
    store.note_server_sample({"at": 5.0, "connected": True, "latency_ms": 0.3})
    row = store.flush()
    assert row.data["server"] == {"at": 5.0, "connected": True, "latency_ms": 0.3}
    second = store.flush()
    assert second is None or "server" not in second.data


def test_it_uses_the_current_time_by_default():
    assert len(metric_series.series(minutes=1, step_seconds=30)["points"]) == 2
