"""What the lead domain caches: its namespaces (name, shape version, time to live), their keys,
and the scopes each entry depends on. A write makes stale every entry of the scopes it touches
(see leads.invalidation); nothing here talks to Redis or the database.

Namespace  key                      scopes it depends on
org        "<number>"               orgs
lead       "<org id>:<phone>"       phone:<phone>
ctx        "<org number>:<phone>"   orgs, phone:<phone>
timeline   "<lead id>"              orgs, lead:<lead id>
leads      a list variant           lists
counts     "<org id>" or "all"      counts
"""

import hashlib

from monitoring.cache import Namespace

# "Not found" answers (an unknown number) are kept briefly.
NOT_FOUND_TTL = 60


def org_ttl(org: dict | None) -> int:
    return 3600 if org is not None else NOT_FOUND_TTL


def context_ttl(context: dict) -> int:
    return 3600 if context["organization"] is not None else NOT_FOUND_TTL


# Bump a namespace's shape when the data it stores changes shape: a deploy then never reads
# entries another version wrote.
ORG = Namespace("org", shape=1, ttl=org_ttl)
LEAD = Namespace("lead", shape=1, ttl=3600)
CTX = Namespace("ctx", shape=1, ttl=context_ttl)
TIMELINE = Namespace("timeline", shape=1, ttl=300)
LEADS = Namespace("leads", shape=1, ttl=300)
COUNTS = Namespace("counts", shape=1, ttl=300)

ORGS_SCOPE = "orgs"
LISTS_SCOPE = "lists"
COUNTS_SCOPE = "counts"


def phone_scope(phone: str) -> str:
    return f"phone:{phone}"


def lead_scope(lead_id: int) -> str:
    return f"lead:{lead_id}"


def lead_key(organization_id: int, phone: str) -> str:
    return f"{organization_id}:{phone}"


def context_key(org_number: str, phone: str) -> str:
    return f"{org_number}:{phone}"


def variant_key(**params) -> str:
    """A short stable key for one variant of a list (any filters, any page)."""
    text = "&".join(f"{name}={params[name]}" for name in sorted(params))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def lead_scopes(lead_id: int | None, phones) -> set[str]:
    """What a change to a lead (its row, conversations or messages) makes stale."""
    scopes = {phone_scope(phone) for phone in phones if phone}
    if lead_id is not None:
        scopes.add(lead_scope(lead_id))
    return scopes | {LISTS_SCOPE, COUNTS_SCOPE}
