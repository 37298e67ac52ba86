"""The silences over the monitoring API: GET lists those in force or to come, POST creates
one (JSON: rule or null for every rule, reason, owner, starts_at, ends_at or duration, weekly),
POST .../<id>/cancel ends one. Creating and ending need the Bearer token or a staff session
with the switch permission (a silence also holds back the automatic rollback)."""

import json

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_http_methods, require_POST

from monitoring.alerts import silences
from monitoring.alerts.durations import parse_duration
from monitoring.api.access import actor, bearer_ok, monitoring_access
from monitoring.cache.controls import may_flip
from monitoring.models import Silence


@require_http_methods(["GET", "POST"])
@monitoring_access
def silence_list(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        return _create(request)
    now = timezone.now()
    shown = [silences.as_dict(silence, now) for silence, _, _ in silences.in_force_or_coming(now)]
    return JsonResponse({"silences": shown})


@require_POST
@monitoring_access
def silence_cancel(request: HttpRequest, silence_id: int) -> JsonResponse:
    if not _may_change(request):
        return _forbidden()
    try:
        silence = silences.cancel(silence_id, actor=actor(request))
    except Silence.DoesNotExist:
        return JsonResponse({"error": f"no silence {silence_id}"}, status=404)
    return JsonResponse(silences.as_dict(silence))


def _create(request: HttpRequest) -> JsonResponse:
    if not _may_change(request):
        return _forbidden()
    try:
        body = json.loads(request.body or b"{}")
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        fields = _fields(body)
        silence = silences.create(**fields, actor=actor(request))
    except (ValueError, silences.Invalid) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(silences.as_dict(silence), status=201)


def _fields(body: dict) -> dict:
    rule = body.get("rule") or ""
    if not isinstance(rule, str):
        raise ValueError("rule must be a rule name, or null for every rule")
    starts_at = _time(body["starts_at"], "starts_at") if body.get("starts_at") else timezone.now()
    if body.get("ends_at") and body.get("duration"):
        raise ValueError("give ends_at or duration, not both")
    if body.get("ends_at"):
        ends_at = _time(body["ends_at"], "ends_at")
    elif body.get("duration"):
        ends_at = starts_at + parse_duration(str(body["duration"]))
    else:
        raise ValueError('give ends_at or duration (e.g. "2h")')
    return {
        "rule": rule,
        "reason": str(body.get("reason") or ""),
        "owner": str(body.get("owner") or ""),
        "starts_at": starts_at,
        "ends_at": ends_at,
        "weekly": body.get("weekly") is True,
    }


def _time(value, name: str):
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None or not timezone.is_aware(moment):
        raise ValueError(f"{name} must be an ISO 8601 time with its offset, e.g. 2026-12-05T02:00Z")
    return moment


def _may_change(request: HttpRequest) -> bool:
    return bearer_ok(request) or may_flip(request.user)


def _forbidden() -> JsonResponse:
    return JsonResponse({"error": "needs the permission to flip the cache switch"}, status=403)
