"""Dashboard pages and actions: parse, call a service, render (or redirect with a message)."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from monitoring.alerts import engine, incidents, runbook, silences
from monitoring.api.alerts import filtered_alerts
from monitoring.cache import controls, switch
from monitoring.dashboard import pages
from monitoring.dashboard.access import flip_permission_required, may_flip, staff_required
from monitoring.dashboard.forms import (
    AcknowledgeForm,
    AlertFilterForm,
    ReasonForm,
    SilenceForm,
    SwitchForm,
)
from monitoring.models import Alert, Incident, Silence, SwitchAudit

ALERTS_SHOWN = 200
SILENCES_PAST_SHOWN = 20
INCIDENTS_SHOWN = 50
AUDIT_PAGE_SIZE = 50


@require_GET
@staff_required
def overview(request: HttpRequest) -> HttpResponse:
    context = {**pages.overview(), "may_flip": may_flip(request.user)}
    return render(request, "monitoring/dashboard/overview.html", context)


def _health_fragment(request: HttpRequest) -> dict:
    return pages.health_tiles()


def _switch_fragment(request: HttpRequest) -> dict:
    return {"switch": pages.switch_panel(), "may_flip": may_flip(request.user)}


def _switch_badge_fragment(request: HttpRequest) -> dict:
    return {"state": switch.read_state()}


def _rollback_banner_fragment(request: HttpRequest) -> dict:
    return {"state": switch.read_state(), "may_flip": may_flip(request.user)}


def _alerts_fragment(request: HttpRequest) -> dict:
    # An acknowledgement from a swapped-in row returns to the page, not to this fragment.
    return {**pages.active_alerts(), "next_path": reverse("dashboard:overview")}


# The regions the pages' script fetches again when an event says they changed: the name (in
# the region's data-fragment attribute), its template (which the full page includes) and
# what it shows.
FRAGMENTS = {
    "health": ("monitoring/dashboard/_health.html", _health_fragment),
    "switch": ("monitoring/dashboard/_switch_panel.html", _switch_fragment),
    "switch-badge": ("monitoring/dashboard/_switch_badge.html", _switch_badge_fragment),
    "alerts": ("monitoring/dashboard/_active_alerts.html", _alerts_fragment),
    "rollback-banner": ("monitoring/dashboard/_rollback_banner.html", _rollback_banner_fragment),
}


@require_GET
@never_cache
@staff_required
def fragment(request: HttpRequest, name: str) -> HttpResponse:
    """One region of a dashboard page alone, rendered as the page renders it."""
    try:
        template, context = FRAGMENTS[name]
    except KeyError:
        raise Http404(f"no fragment {name!r}") from None
    return render(request, template, context(request))


@require_GET
@staff_required
def alert_list(request: HttpRequest) -> HttpResponse:
    form = AlertFilterForm(request.GET or None)
    alerts = filtered_alerts(**form.filters())
    context = {"form": form, "alerts": alerts[:ALERTS_SHOWN], "shown_limit": ALERTS_SHOWN}
    return render(request, "monitoring/dashboard/alerts.html", context)


@require_GET
@staff_required
def alert_detail(request: HttpRequest, alert_id: int) -> HttpResponse:
    alert = get_object_or_404(
        Alert.objects.prefetch_related("transitions", "deliveries", "notifications"), pk=alert_id
    )
    now = timezone.now()
    silence = silences.covering(alert.rule, now)
    context = {
        "alert": alert,
        "runbook_url": runbook.link(alert.rule),
        "silenced_by": silence,
        "silenced_until": silences.window_at(silence, now)[1] if silence else None,
    }
    return render(request, "monitoring/dashboard/alert_detail.html", context)


@require_POST
@staff_required
def acknowledge_alert(request: HttpRequest, alert_id: int) -> HttpResponse:
    form = AcknowledgeForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    try:
        alert = engine.acknowledge(alert_id, request.user.get_username(), note, timezone.now())
    except Alert.DoesNotExist:
        raise Http404(f"no alert {alert_id}") from None
    messages.success(request, f"Alert {alert.rule} acknowledged.")
    return redirect(_next_or(request, reverse("dashboard:alert-detail", args=[alert_id])))


@require_GET
@staff_required
def review(request: HttpRequest) -> HttpResponse:
    period = request.GET.get("period", "7d")
    if period not in dict(pages.REVIEW_PERIODS):
        raise Http404(f"no review period {period!r}")
    return render(request, "monitoring/dashboard/review.html", pages.review(period))


@require_GET
@staff_required
def switch_history(request: HttpRequest) -> HttpResponse:
    audits = Paginator(SwitchAudit.objects.all(), AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"audits": audits, "switch": pages.switch_panel()}
    return render(request, "monitoring/dashboard/switch_history.html", context)


@require_POST
@flip_permission_required
def flip_switch(request: HttpRequest) -> HttpResponse:
    form = SwitchForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Nothing changed. {form.error_text()}")
        return _back_to_switch()
    try:
        state = controls.flip(
            form.cleaned_data["enabled"],
            user=request.user,
            reason=form.cleaned_data["reason"],
            source="dashboard",
        )
    except controls.Refused as exc:
        messages.error(request, f"The switch cannot be flipped: {exc}.")
        return _back_to_switch()
    messages.success(
        request,
        f"Caching is now {'on' if state.enabled else 'off'} (generation {state.generation}).",
    )
    return _back_to_switch()


@require_POST
@flip_permission_required
def flush_cache(request: HttpRequest) -> HttpResponse:
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Nothing flushed. {form.error_text()}")
        return _back_to_switch()
    try:
        state = controls.flush(
            user=request.user, reason=form.cleaned_data["reason"], source="dashboard"
        )
    except controls.Refused as exc:
        messages.error(request, f"The cache cannot be flushed: {exc}.")
        return _back_to_switch()
    messages.success(request, f"Cache flushed: now generation {state.generation}.")
    return _back_to_switch()


@require_GET
@staff_required
def silence_list(request: HttpRequest) -> HttpResponse:
    form = SilenceForm(rules=silences.rule_names(), initial={"owner": request.user.get_username()})
    return render(request, "monitoring/dashboard/silences.html", _silences_context(request, form))


def _silences_context(request: HttpRequest, form: SilenceForm) -> dict:
    return {
        "shown": pages.silences_shown(),
        "past": silences.over(SILENCES_PAST_SHOWN),
        "form": form,
        "may_flip": may_flip(request.user),
    }


@require_POST
@flip_permission_required
def add_silence(request: HttpRequest) -> HttpResponse:
    form = SilenceForm(request.POST, rules=silences.rule_names())
    if form.is_valid():
        data = form.cleaned_data
        starts_at = data["starts_at"] or timezone.now()
        try:
            silence = silences.create(
                rule=data["rule"],
                reason=data["reason"],
                owner=data["owner"] or request.user.get_username(),
                starts_at=starts_at,
                ends_at=starts_at + data["duration"],
                weekly=data["weekly"],
                actor=request.user.get_username(),
            )
        except silences.Invalid as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Silence #{silence.pk}: {silences.describe(silence)}.")
            return redirect("dashboard:silences")
    context = _silences_context(request, form)
    return render(request, "monitoring/dashboard/silences.html", context, status=400)


@require_POST
@flip_permission_required
def cancel_silence(request: HttpRequest, silence_id: int) -> HttpResponse:
    try:
        silence = silences.cancel(silence_id, actor=request.user.get_username())
    except Silence.DoesNotExist:
        raise Http404(f"no silence {silence_id}") from None
    messages.success(request, f"Silence #{silence.pk} ended.")
    return redirect("dashboard:silences")


@require_GET
@staff_required
def incident_list(request: HttpRequest) -> HttpResponse:
    context = {"incidents": incidents.recent(INCIDENTS_SHOWN)}
    return render(request, "monitoring/dashboard/incidents.html", context)


@require_GET
@staff_required
def incident_detail(request: HttpRequest, incident_id: int) -> HttpResponse:
    incident = get_object_or_404(Incident.objects.prefetch_related("alerts"), pk=incident_id)
    context = {
        "incident": incident,
        "timeline": incidents.timeline(incident),
        "runbooks": sorted({(a.rule, runbook.link(a.rule)) for a in incident.alerts.all()}),
    }
    return render(request, "monitoring/dashboard/incident_detail.html", context)


@require_POST
@staff_required
def add_incident_note(request: HttpRequest, incident_id: int) -> HttpResponse:
    try:
        incidents.add_note(incident_id, request.user.get_username(), request.POST.get("text", ""))
    except Incident.DoesNotExist:
        raise Http404(f"no incident {incident_id}") from None
    except ValueError as exc:
        messages.error(request, f"Nothing added: {exc}.")
    return redirect("dashboard:incident-detail", incident_id=incident_id)


@require_GET
@staff_required
def runbook_page(request: HttpRequest) -> HttpResponse:
    return render(request, "monitoring/dashboard/runbook.html", {"html": pages.runbook_html()})


def _back_to_switch() -> HttpResponse:
    return redirect(reverse("dashboard:overview") + "#switch")


def _next_or(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next", "")
    allowed = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return target if target and allowed else default
