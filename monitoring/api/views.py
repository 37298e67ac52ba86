"""Thin views over the health, metrics and alert services."""

import json
from datetime import timedelta

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST, require_safe

from monitoring.alerts import engine, incidents
from monitoring.api import health
from monitoring.api.access import actor, monitoring_access
from monitoring.api.alerts import alert_list
from monitoring.cache import gate, switch
from monitoring.metrics import history
from monitoring.metrics.aggregate import WINDOWS
from monitoring.metrics.series import series

HEALTH_JSON = "application/health+json"


def _health_response(document: dict) -> JsonResponse:
    status = 503 if document["status"] == "fail" else 200
    return JsonResponse(document, status=status, content_type=HEALTH_JSON)


@require_safe  # probes use HEAD too
def health_live(request: HttpRequest) -> JsonResponse:
    """The process answers: nothing external is checked."""
    return JsonResponse({"status": "pass"}, content_type=HEALTH_JSON)


@require_safe  # probes use HEAD too
def health_ready(request: HttpRequest) -> JsonResponse:
    """Ready for traffic: the database answers (Redis down is only a warning)."""
    return _health_response(health.readiness())


@require_safe  # probes use HEAD too
def health_overall(request: HttpRequest) -> JsonResponse:
    return _health_response(health.full_health())


@require_safe  # probes use HEAD too
def health_redis(request: HttpRequest) -> JsonResponse:
    body, status = health.redis_health()
    return JsonResponse(body, status=status)


@require_GET
@monitoring_access
def performance(request: HttpRequest) -> JsonResponse:
    window = request.GET.get("window", "60s")
    if window not in WINDOWS:
        return JsonResponse({"error": f"window must be one of {', '.join(WINDOWS)}"}, status=400)
    figures = history.figures(WINDOWS[window])
    state = gate.switch.current()
    return JsonResponse(
        {"window": window, "switch": state.as_dict(), "breaker": gate.breaker.state, **figures}
    )


@require_GET
@monitoring_access
def switch_state(request: HttpRequest) -> JsonResponse:
    """The switch as stored now (not this process's copy): what a polling dashboard shows."""
    return JsonResponse(switch_document(switch.read_state()))


def switch_document(state: switch.SwitchState) -> dict:
    return {
        **state.as_dict(),
        "can_flip": state.can_flip,
        "why_unavailable": "" if state.can_flip else switch.why_unavailable(),
        "breaker": gate.breaker.state,
    }


SERIES_MINUTES = range(1, 61)
SERIES_STEPS = range(5, 301)


@require_GET
@monitoring_access
def metric_series(request: HttpRequest) -> JsonResponse:
    window = request.GET.get("window")
    if window is not None:
        if window not in history.RANGES:
            ranges = ", ".join(history.RANGES)
            return JsonResponse({"error": f"window must be one of {ranges}"}, status=400)
        _, step_seconds, points = history.RANGES[window]
        body = history.series(window)
        now = timezone.now()
        since = now - timedelta(seconds=step_seconds * points)
        body["marks"] = incidents.chart_marks(since, now)
        return JsonResponse(body)
    try:
        minutes = int(request.GET.get("minutes", "15"))
        step = int(request.GET.get("step", "15"))
    except ValueError:
        return JsonResponse({"error": "minutes and step must be whole numbers"}, status=400)
    if minutes not in SERIES_MINUTES or step not in SERIES_STEPS:
        return JsonResponse(
            {"error": "minutes must be 1 to 60 and step 5 to 300 (seconds)"}, status=400
        )
    body = series(minutes, step)
    now = timezone.now()
    body["marks"] = incidents.chart_marks(now - timedelta(minutes=minutes), now)
    return JsonResponse(body)


@require_GET
@monitoring_access
def alerts(request: HttpRequest) -> JsonResponse:
    state = request.GET.get("state", "active")
    severity = request.GET.get("severity", "")
    try:
        body = alert_list(state, severity, limit=int(request.GET.get("limit", "100")))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(body)


@require_POST
@monitoring_access
def acknowledge(request: HttpRequest, alert_id: int) -> JsonResponse:
    note = _note(request)
    try:
        alert = engine.acknowledge(alert_id, actor(request), note, timezone.now())
    except engine.Alert.DoesNotExist:
        return JsonResponse({"error": f"no alert {alert_id}"}, status=404)
    return JsonResponse(
        {
            "id": alert.id,
            "acknowledged_by": alert.acknowledged_by,
            "acknowledged_at": alert.acknowledged_at.isoformat(),
            "note": alert.acknowledgement_note,
        }
    )


def _note(request: HttpRequest) -> str:
    if request.content_type == "application/json":
        try:
            return str(json.loads(request.body or b"{}").get("note", ""))
        except (ValueError, AttributeError):
            return ""
    return request.POST.get("note", "")
