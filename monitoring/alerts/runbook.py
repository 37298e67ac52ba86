"""Each rule's runbook link: a section of docs/ROLLOUT.md, served at /dashboard/runbook/
unless ALERT_RUNBOOK_URL says where the runbook is published (the section's anchor is added)."""

from django.conf import settings
from django.urls import reverse
from markdown.extensions.toc import slugify

# The ROLLOUT.md heading that tells what to do about each rule.
SECTIONS = {
    "redis_connection_lost": "Rolling back",
    "cache_hit_rate_critical": "Troubleshooting",
    "cache_hit_rate_low": "Phase 2 — turn caching on and watch it warm",
    "response_time_critical": "Rolling back",
    "response_time_high": "Phase 3 — validate the performance",
    "error_rate_critical": "Rolling back",
    "redis_memory_high": "Troubleshooting",
}
DEFAULT_SECTION = "Troubleshooting"


def anchor(rule: str) -> str:
    return slugify(SECTIONS.get(rule, DEFAULT_SECTION), "-")


def link(rule: str) -> str:
    base = settings.ALERT_RUNBOOK_URL or reverse("dashboard:runbook")
    return f"{base}#{anchor(rule)}"
