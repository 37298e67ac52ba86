"""The admin tests' helpers: Acme Plumbing's number, and what the admin's lead pages show and
post."""

from datetime import UTC, datetime

from leads.models import Lead

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
STARTED = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
ORG_NUMBER = "+15550001111"


def changelist_names(response) -> list[str]:
    assert response.status_code == 200
    return sorted(lead.name for lead in response.context["cl"].result_list)


def lead_form_data(lead: Lead, **changes) -> dict:
    data = {
        "organization": lead.organization_id,
        "phone": lead.phone,
        "name": lead.name,
        "status": lead.status,
        "interest": "{}",
        "qualification": "{}",
        "sentiment": "",
        "last_contact_at_0": "",
        "last_contact_at_1": "",
        "_save": "Save",
    }
    return {**data, **changes}
