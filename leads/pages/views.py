"""Lead pages: the list (search, status filter, counts) and each lead's conversation timeline."""

from math import ceil

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from leads import services
from leads.models import Lead
from leads.pages.forms import LeadFilterForm
from monitoring.dashboard.access import staff_required

LEADS_PER_PAGE = 25


@require_GET
@staff_required
def lead_list(request: HttpRequest) -> HttpResponse:
    form = LeadFilterForm(request.GET or None)
    filters = form.filters()
    listing = services.lead_list(per_page=LEADS_PER_PAGE, **filters)
    context = {
        "form": form,
        "filters": filters,
        "listing": listing,
        "pages": max(1, ceil(listing["total"] / listing["per_page"])),
        "counts": services.lead_counts(),
        "statuses": Lead.Status.values,
    }
    return render(request, "leads/lead_list.html", context)


@require_GET
@staff_required
def lead_detail(request: HttpRequest, lead_id: int) -> HttpResponse:
    return render(request, "leads/lead_detail.html", _timeline_or_404(lead_id))


@require_GET
@staff_required
def lead_timeline(request: HttpRequest, lead_id: int) -> HttpResponse:
    """The timeline alone, for the page's script to swap in when a message arrives."""
    return render(request, "leads/_timeline.html", _timeline_or_404(lead_id))


def _timeline_or_404(lead_id: int) -> dict:
    timeline = services.lead_timeline(lead_id)
    if timeline is None:
        raise Http404(f"no lead {lead_id}")
    lead = timeline["lead"]
    # Provider data as (key, value) pairs: a template looking up `.items` on the dict itself
    # would find a stored key named "items" instead.
    facts = {
        name: sorted(lead[name].items()) if isinstance(lead[name], dict) else []
        for name in ("interest", "qualification")
    }
    return {**timeline, "facts": facts}
