"""The lead domain's services: reads go through the cache gate, writes commit, and the model
layer then invalidates every cache entry they affected (leads.invalidation). Views, webhooks and
commands call only these."""

from leads.services.reads import (
    acall_context,
    call_context,
    lead_counts,
    lead_list,
    organization_for_number,
)
from leads.services.timeline import lead_timeline
from leads.services.writes import (
    add_message,
    complete_conversation,
    find_or_create_lead,
    open_conversation,
    update_lead,
)

__all__ = [
    "acall_context",
    "add_message",
    "call_context",
    "complete_conversation",
    "find_or_create_lead",
    "lead_counts",
    "lead_list",
    "lead_timeline",
    "open_conversation",
    "organization_for_number",
    "update_lead",
]
