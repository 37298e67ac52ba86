"""The monitoring API: who may read it (staff session or Bearer token, else 401 JSON and never a
redirect), the performance figures and their windows, the alert list with its filters and
counts, and acknowledging an alert (a session needs its CSRF token, a token does not)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client, override_settings

from monitoring.identity import PROCESS_ID
from monitoring.metrics import store
from monitoring.models import Alert, AlertTransition
from tests.monitoring.metrics_support import TOKEN, bearer, reset_metrics
from tests.personas import plain_user, signed_in, viewer

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
DENIED = {"error": "authentication required: a staff session or a Bearer token"}
PROTECTED = [
    ("GET", "/api/monitoring/metrics/performance"),
    ("GET", "/api/monitoring/alerts"),
    ("GET", "/api/monitoring/stream"),
    ("GET", "/metrics"),
    ("POST", "/api/monitoring/alerts/{alert}/ack"),
]
PUBLIC = [
    "/api/monitoring/health",
    "/api/monitoring/health/live",
    "/api/monitoring/health/ready",
    "/api/monitoring/health/redis",
]


@pytest.fixture(autouse=True)
def fresh_window():
    reset_metrics()
    with override_settings(MONITORING_TOKEN=TOKEN):
        yield
    reset_metrics()


def make_alert(rule: str, severity: str, state: str, minutes: int, **fields) -> Alert:
    started = T0 + timedelta(minutes=minutes)
    return Alert.objects.create(
        rule=rule,
        severity=severity,
        state=state,
        summary=f"{rule} breached",
        value=fields.pop("value", 1.0),
        threshold=fields.pop("threshold", 0.5),
        started_at=started,
        fired_at=started + timedelta(minutes=1) if state != "pending" else None,
        resolved_at=started + timedelta(minutes=5) if state == "resolved" else None,
        **fields,
    )


@pytest.fixture
def alerts() -> dict[str, Alert]:
    """Two open alerts and two resolved ones, one of each severity in each."""
    return {
        "redis_down": make_alert("redis_down", "critical", "firing", 40),
        "hit_rate_warning": make_alert("hit_rate_warning", "warning", "pending", 30),
        "error_rate": make_alert("error_rate", "critical", "resolved", 20),
        "response_time_warning": make_alert("response_time_warning", "warning", "resolved", 10),
    }


def request_as(persona: str, method: str, path: str):
    """Send the request as one of the personas; returns the response."""
    client, headers = Client(), {}
    if persona == "staff":
        client = signed_in(viewer("olivia-ops"))
    elif persona == "member":
        client = signed_in(plain_user("mark-sales"))
    elif persona == "right token":
        headers = bearer()
    elif persona == "wrong token":
        headers = bearer("not-the-token")
    elif persona == "token while none is configured":
        headers = bearer("")
    send = client.post if method == "POST" else client.get
    return send(path, headers=headers)


def assert_denied(response) -> None:
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json() == DENIED
    assert response["WWW-Authenticate"] == 'Bearer realm="opsdash monitoring"'
    assert not response.has_header("Location")


# --- access ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("persona", ["anonymous", "member", "wrong token"])
def test_it_refuses_everyone_else_with_401_json(alerts, persona, method, path):
    response = request_as(persona, method, path.format(alert=alerts["redis_down"].id))

    assert_denied(response)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_it_refuses_any_bearer_while_no_token_is_configured(alerts, method, path):
    with override_settings(MONITORING_TOKEN=""):
        for persona in ("token while none is configured", "wrong token"):
            response = request_as(persona, method, path.format(alert=alerts["redis_down"].id))
            assert_denied(response)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("persona", ["staff", "right token"])
def test_it_lets_staff_and_the_token_in(alerts, persona, method, path):
    response = request_as(persona, method, path.format(alert=alerts["redis_down"].id))

    assert response.status_code == 200
    if path == "/api/monitoring/stream":
        assert response["Content-Type"] == "text/event-stream"  # not read: it never ends
    elif path == "/metrics":
        assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    else:
        assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("path", PUBLIC)
def test_it_answers_the_health_endpoints_to_anyone(path):
    response = Client().get(path)

    assert response.status_code == 200
    assert "status" in response.json()


# --- performance ----------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["2m", "60", "1d", "", "60S"])
def test_it_refuses_an_unknown_window_naming_the_allowed_ones(window):
    response = Client().get(
        "/api/monitoring/metrics/performance", {"window": window}, headers=bearer()
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("window must be one of ")
    assert {"60s", "5m", "1h", "7d", "30d"} <= set(
        error.removeprefix("window must be one of ").split(", ")
    )


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("60s", 60), ("5m", 300), ("1h", 3600), ("7d", 604800), ("30d", 2592000)],
)
def test_it_accepts_the_runbook_windows(window, seconds):
    response = Client().get(
        "/api/monitoring/metrics/performance", {"window": window}, headers=bearer()
    )

    assert response.status_code == 200
    assert (response.json()["window"], response.json()["window_seconds"]) == (window, seconds)


def test_it_defaults_to_the_last_minute():
    body = Client().get("/api/monitoring/metrics/performance", headers=bearer()).json()

    assert (body["window"], body["window_seconds"]) == ("60s", 60)


def test_it_shows_the_figures_of_the_requests_served():
    client = Client()
    for _ in range(3):
        assert client.get("/no-such-page").status_code == 404
    for _ in range(2):
        assert client.get("/webhooks/twilio/sms").status_code == 405
    assert client.get("/api/monitoring/health/live").status_code == 200
    store.flush()

    body = client.get("/api/monitoring/metrics/performance?window=5m", headers=bearer()).json()

    assert body["processes"] == [PROCESS_ID]
    assert body["breaker"] == "closed"
    assert set(body["switch"]) >= {"enabled", "source", "generation"}
    assert (body["overall"]["requests"], body["overall"]["errors"]) == (6, 0)
    assert body["overall"]["requests_per_second"] == 0.02  # 6 requests over 300 s
    assert body["overall"]["status"] == {"4xx": 5, "2xx": 1}
    groups = body["route_groups"]
    assert {name: (g["requests"], g["status"]) for name, g in groups.items()} == {
        "monitoring_api": (1, {"2xx": 1}),
        "other": (3, {"4xx": 3}),
        "webhook_sms": (2, {"4xx": 2}),
    }
    assert groups["other"]["error_rate"] == 0.0
    assert sum(groups["other"]["histogram"]["counts"]) == 3
    assert groups["other"]["p50_ms"] <= groups["other"]["max_ms"]
    assert (body["cache"]["lookups"], body["cache"]["hit_rate"]) == (0, None)


# --- alerts ---------------------------------------------------------------------------------


def alert_list(**query) -> dict:
    response = Client().get("/api/monitoring/alerts", query, headers=bearer())
    assert response.status_code == 200
    return response.json()


def test_it_lists_the_active_alerts_by_default(alerts):
    body = alert_list()

    assert body["state"] == "active"
    assert [a["rule"] for a in body["alerts"]] == ["redis_down", "hit_rate_warning"]
    assert body["counts"] == {"warning": 1, "critical": 1}


@pytest.mark.parametrize(
    ("query", "rules", "counts"),
    [
        ({"state": "active"}, ["redis_down", "hit_rate_warning"], {"warning": 1, "critical": 1}),
        (
            {"state": "resolved"},
            ["error_rate", "response_time_warning"],
            {"warning": 1, "critical": 1},
        ),
        (
            {"state": "all"},
            ["redis_down", "hit_rate_warning", "error_rate", "response_time_warning"],
            {"warning": 2, "critical": 2},
        ),
        (
            {"state": "active", "severity": "critical"},
            ["redis_down"],
            {"warning": 0, "critical": 1},
        ),
        (
            {"state": "all", "severity": "warning"},
            ["hit_rate_warning", "response_time_warning"],
            {"warning": 2, "critical": 0},
        ),
        (
            {"state": "resolved", "severity": "critical"},
            ["error_rate"],
            {"warning": 0, "critical": 1},
        ),
    ],
)
def test_it_filters_alerts_by_state_and_severity(alerts, query, rules, counts):
    body = alert_list(**query)

    assert body["state"] == query["state"]
    assert [a["rule"] for a in body["alerts"]] == rules
    assert body["counts"] == counts


def test_it_shows_an_alert_with_its_transitions(alerts):
    alert = alerts["redis_down"]
    AlertTransition.objects.create(alert=alert, at=T0, from_state="", to_state="pending", value=1)
    AlertTransition.objects.create(
        alert=alert, at=T0 + timedelta(minutes=1), from_state="pending", to_state="firing", value=1
    )

    shown = alert_list(state="firing")["alerts"]

    assert len(shown) == 1
    assert {k: shown[0][k] for k in ("id", "rule", "severity", "state", "value", "threshold")} == {
        "id": alert.id,
        "rule": "redis_down",
        "severity": "critical",
        "state": "firing",
        "value": 1.0,
        "threshold": 0.5,
    }
    assert shown[0]["started_at"] == (T0 + timedelta(minutes=40)).isoformat()
    assert (shown[0]["resolved_at"], shown[0]["acknowledged"]) == (None, None)
    assert [(t["from"], t["to"]) for t in shown[0]["transitions"]] == [
        ("", "pending"),
        ("pending", "firing"),
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"state": "open"}, "state must be one of active, firing, pending, resolved, all"),
        ({"severity": "info"}, "severity must be one of warning, critical"),
    ],
)
def test_it_refuses_an_unknown_filter(query, message):
    response = Client().get("/api/monitoring/alerts", query, headers=bearer())

    assert (response.status_code, response.json()) == (400, {"error": message})


# --- acknowledging --------------------------------------------------------------------------


def test_it_acknowledges_an_alert_with_the_token(alerts):
    alert = alerts["redis_down"]
    client = Client(enforce_csrf_checks=True)  # a token request needs no CSRF token

    response = client.post(
        f"/api/monitoring/alerts/{alert.id}/ack",
        {"note": "failing over to the replica"},
        content_type="application/json",
        headers=bearer(),
    )

    assert response.status_code == 200
    body = response.json()
    alert.refresh_from_db()
    assert body == {
        "id": alert.id,
        "acknowledged_by": "api token",
        "acknowledged_at": alert.acknowledged_at.isoformat(),
        "note": "failing over to the replica",
    }
    assert (alert.acknowledged_by, alert.acknowledgement_note) == (
        "api token",
        "failing over to the replica",
    )
    assert alert_list()["alerts"][0]["acknowledged"] == {
        "by": "api token",
        "at": alert.acknowledged_at.isoformat(),
        "note": "failing over to the replica",
    }


def test_it_refuses_a_session_acknowledgement_without_the_csrf_token(alerts):
    alert = alerts["redis_down"]
    client = signed_in(viewer("olivia-ops"), enforce_csrf_checks=True)

    response = client.post(f"/api/monitoring/alerts/{alert.id}/ack", {"note": "on it"})

    assert response.status_code == 403
    alert.refresh_from_db()
    assert (alert.acknowledged_at, alert.acknowledged_by) == (None, "")


def test_it_acknowledges_with_a_session_and_its_csrf_token(alerts):
    alert = alerts["hit_rate_warning"]
    client = signed_in(viewer("olivia-ops"), enforce_csrf_checks=True)
    assert client.get("/admin/").status_code == 200  # a page with a form sets the CSRF cookie
    csrf_token = client.cookies["csrftoken"].value

    response = client.post(
        f"/api/monitoring/alerts/{alert.id}/ack",
        {"note": "warming the cache"},
        headers={"X-CSRFToken": csrf_token},
    )

    assert response.status_code == 200
    alert.refresh_from_db()
    assert response.json() == {
        "id": alert.id,
        "acknowledged_by": "olivia-ops",
        "acknowledged_at": alert.acknowledged_at.isoformat(),
        "note": "warming the cache",
    }


def test_it_answers_404_for_a_missing_alert(alerts):
    missing = max(a.id for a in alerts.values()) + 1000

    response = Client().post(f"/api/monitoring/alerts/{missing}/ack", headers=bearer())

    assert (response.status_code, response.json()) == (404, {"error": f"no alert {missing}"})


def test_it_acknowledges_only_with_post(alerts):
    response = Client().get(
        f"/api/monitoring/alerts/{alerts['redis_down'].id}/ack", headers=bearer()
    )

    assert response.status_code == 405
