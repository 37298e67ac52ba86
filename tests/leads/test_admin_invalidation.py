"""Admin edits invalidate what they change: every admin write path (edits, deletes, bulk
deletes, moved conversations) drops the cached entries it makes stale, old keys included."""

import pytest
from django.db import connection
from django.urls import reverse

from leads import services
from leads.models import Conversation, Lead
from leads.services import call_context
from monitoring.cache import switch
from monitoring.models import SwitchAudit
from tests.leads.admin_support import ORG_NUMBER, STARTED, lead_form_data

# --- admin edits invalidate the cache -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_invalidates_the_call_context_when_a_lead_is_edited(shared_redis, admin_client, leads):
    ada = leads["ada"]
    assert call_context(ORG_NUMBER, ada.phone)["lead"]["name"] == "Ada Lovelace"
    # A write below the ORM is not seen: the context really is cached.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE leads_lead SET name = 'Bypassed' WHERE id = %s", [ada.pk])
    assert call_context(ORG_NUMBER, ada.phone)["lead"]["name"] == "Ada Lovelace"

    response = admin_client.post(
        reverse("admin:leads_lead_change", args=[ada.pk]),
        lead_form_data(ada, name="Ada King", status="customer"),
    )

    assert response.status_code == 302
    context = call_context(ORG_NUMBER, ada.phone)
    assert (context["lead"]["name"], context["lead"]["status"]) == ("Ada King", "customer")


@pytest.mark.django_db(transaction=True)
def test_it_invalidates_the_call_context_when_a_lead_is_deleted(shared_redis, admin_client, leads):
    ada = leads["ada"]
    assert call_context(ORG_NUMBER, ada.phone)["lead"]["name"] == "Ada Lovelace"

    response = admin_client.post(reverse("admin:leads_lead_delete", args=[ada.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert call_context(ORG_NUMBER, ada.phone)["lead"] is None


@pytest.mark.django_db(transaction=True)
def test_it_invalidates_the_organizations_entries_when_it_is_edited(
    shared_redis, admin_client, acme
):
    number = acme.numbers.get()
    phone = "+15551234567"
    assert call_context(ORG_NUMBER, phone)["organization"]["name"] == "Acme Plumbing"
    generation = switch.read_state().generation

    response = admin_client.post(
        reverse("admin:leads_organization_change", args=[acme.pk]),
        {
            "name": "Acme Plumbing & Heating",
            "address": "",
            "timezone": "America/New_York",
            "business_hours": "{}",
            "numbers-TOTAL_FORMS": "1",
            "numbers-INITIAL_FORMS": "1",
            "numbers-MIN_NUM_FORMS": "0",
            "numbers-MAX_NUM_FORMS": "1000",
            "numbers-0-id": str(number.pk),
            "numbers-0-organization": str(acme.pk),
            "numbers-0-e164": ORG_NUMBER,
            "numbers-0-label": "main",
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    # The organizations' scope is invalidated; the rest of the cache (other callers) stays.
    assert switch.read_state().generation == generation
    assert not SwitchAudit.objects.filter(action="flush").exists()
    assert call_context(ORG_NUMBER, phone)["organization"]["name"] == "Acme Plumbing & Heating"


# --- every admin write path invalidates, old keys included ----------------------------------


def _lead_entry(lead: Lead) -> dict:
    return call_context(ORG_NUMBER, lead.phone)


@pytest.mark.django_db(transaction=True)
def test_it_invalidates_every_lead_of_a_bulk_delete(shared_redis, admin_client, leads):
    ada, grace = leads["ada"], leads["grace"]
    assert [_lead_entry(lead)["lead"]["name"] for lead in (ada, grace)] == [
        "Ada Lovelace",
        "Grace Hopper",
    ]
    assert services.lead_counts()["total"] == 3
    assert services.lead_list()["total"] == 3

    response = admin_client.post(
        reverse("admin:leads_lead_changelist"),
        {"action": "delete_selected", "_selected_action": [ada.pk, grace.pk], "post": "yes"},
    )

    assert response.status_code == 302
    assert Lead.objects.count() == 1
    assert [_lead_entry(lead)["lead"] for lead in (ada, grace)] == [None, None]
    assert services.lead_counts()["total"] == 1
    assert [row["name"] for row in services.lead_list()["results"]] == ["Alan Turing"]


@pytest.mark.django_db(transaction=True)
def test_it_invalidates_everything_of_a_deleted_organization(shared_redis, admin_client, leads):
    ada = leads["ada"]
    assert _lead_entry(ada)["organization"]["name"] == "Acme Plumbing"
    assert services.lead_timeline(ada.pk)["lead"]["name"] == "Ada Lovelace"
    org_id = ada.organization_id

    response = admin_client.post(
        reverse("admin:leads_organization_delete", args=[org_id]), {"post": "yes"}
    )

    assert response.status_code == 302
    context = _lead_entry(ada)
    assert (context["organization"], context["lead"]) == (None, None)
    assert services.organization_for_number(ORG_NUMBER) is None
    assert services.lead_timeline(ada.pk) is None
    assert services.lead_counts()["total"] == 0


@pytest.mark.django_db(transaction=True)
def test_it_invalidates_the_old_numbers_entries_when_a_leads_phone_is_edited(
    shared_redis, admin_client, leads
):
    ada = leads["ada"]
    old_phone, new_phone = ada.phone, "+15551112222"
    assert call_context(ORG_NUMBER, old_phone)["lead"]["name"] == "Ada Lovelace"
    assert call_context(ORG_NUMBER, new_phone)["lead"] is None

    response = admin_client.post(
        reverse("admin:leads_lead_change", args=[ada.pk]), lead_form_data(ada, phone=new_phone)
    )

    assert response.status_code == 302
    assert call_context(ORG_NUMBER, old_phone)["lead"] is None
    assert call_context(ORG_NUMBER, new_phone)["lead"]["name"] == "Ada Lovelace"


@pytest.mark.django_db(transaction=True)
def test_it_invalidates_both_leads_when_a_conversation_is_moved(shared_redis, admin_client, leads):
    ada, grace = leads["ada"], leads["grace"]
    call = Conversation.objects.create(
        lead=ada, channel="voice", status="completed", started_at=STARTED, summary="Moved call."
    )
    assert call_context(ORG_NUMBER, ada.phone)["conversation_count"] == 1
    assert call_context(ORG_NUMBER, grace.phone)["conversation_count"] == 0
    assert [c["id"] for c in services.lead_timeline(ada.pk)["conversations"]] == [call.pk]

    response = admin_client.post(
        reverse("admin:leads_conversation_change", args=[call.pk]),
        {
            "lead": grace.pk,
            "channel": "voice",
            "call_sid": "",
            "status": "completed",
            "started_at_0": "2025-03-01",
            "started_at_1": "09:30:00",
            "ended_at_0": "",
            "ended_at_1": "",
            "duration_seconds": "",
            "title": "",
            "summary": "Moved call.",
            "classification": "",
            "analysis": "{}",
            "messages-TOTAL_FORMS": "0",
            "messages-INITIAL_FORMS": "0",
            "messages-MIN_NUM_FORMS": "0",
            "messages-MAX_NUM_FORMS": "1000",
            "_save": "Save",
        },
    )

    assert response.status_code == 302, response.content[:2000]
    assert Conversation.objects.get().lead_id == grace.pk
    assert call_context(ORG_NUMBER, ada.phone)["conversation_count"] == 0
    assert call_context(ORG_NUMBER, grace.phone)["conversation_count"] == 1
    assert services.lead_timeline(ada.pk)["conversations"] == []
