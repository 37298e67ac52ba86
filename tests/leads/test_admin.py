"""The admin, as a superuser: the lead pages load, search and filter; the cache switch is flipped
through the service; and admin edits invalidate what they change."""

from datetime import UTC, datetime

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from leads import services
from leads.models import Conversation, Lead, Message, Organization, PhoneNumber
from leads.services import call_context
from monitoring.cache import switch
from monitoring.models import CacheSwitch, SwitchAudit
from tests.personas import staff

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
STARTED = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
ORG_NUMBER = "+15550001111"


@pytest.fixture
def acme(db):
    org = Organization.objects.create(name="Acme Plumbing", timezone="America/New_York")
    PhoneNumber.objects.create(organization=org, e164=ORG_NUMBER, label="main")
    return org


@pytest.fixture
def leads(acme):
    return {
        "ada": Lead.objects.create(
            organization=acme, phone="+15551234567", name="Ada Lovelace", status="hot"
        ),
        "grace": Lead.objects.create(
            organization=acme, phone="+15559876543", name="Grace Hopper", status="new"
        ),
        "alan": Lead.objects.create(
            organization=acme, phone="+442079460958", name="Alan Turing", status="hot"
        ),
    }


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


# --- lead pages -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_every_lead(admin_client, leads):
    response = admin_client.get(reverse("admin:leads_lead_changelist"))
    assert changelist_names(response) == ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
    assert b"+15551234567" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("5551234567", ["Ada Lovelace"]),
        ("+1555", ["Ada Lovelace", "Grace Hopper"]),
        ("7946", ["Alan Turing"]),
        ("grace", ["Grace Hopper"]),
        ("a", ["Ada Lovelace", "Alan Turing", "Grace Hopper"]),
        ("nobody", []),
    ],
)
def test_it_searches_leads_by_phone_and_name(admin_client, leads, query, names):
    response = admin_client.get(reverse("admin:leads_lead_changelist"), {"q": query})
    assert changelist_names(response) == names


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "names"),
    [("hot", ["Ada Lovelace", "Alan Turing"]), ("new", ["Grace Hopper"]), ("lost", [])],
)
def test_it_filters_leads_by_status(admin_client, leads, status, names):
    response = admin_client.get(reverse("admin:leads_lead_changelist"), {"status__exact": status})
    assert changelist_names(response) == names


@pytest.mark.django_db
def test_it_combines_search_and_status_filter(admin_client, leads):
    response = admin_client.get(
        reverse("admin:leads_lead_changelist"), {"q": "+1555", "status__exact": "hot"}
    )
    assert changelist_names(response) == ["Ada Lovelace"]


@pytest.mark.django_db
def test_it_shows_a_lead(admin_client, leads):
    response = admin_client.get(reverse("admin:leads_lead_change", args=[leads["ada"].pk]))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "created_at" not in form.fields
    assert form.initial["phone"] == "+15551234567"


@pytest.mark.django_db
def test_it_refuses_a_lead_phone_not_in_e164_form(admin_client, leads):
    ada = leads["ada"]
    response = admin_client.post(
        reverse("admin:leads_lead_change", args=[ada.pk]),
        lead_form_data(ada, phone="(555) 123-4567"),
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "phone": ["store phone numbers in E.164 form (+15551234567)"]
    }
    ada.refresh_from_db()
    assert ada.phone == "+15551234567"


@pytest.mark.django_db
def test_it_shows_a_conversation_with_its_messages_and_a_read_only_provider_id(admin_client, leads):
    conversation = Conversation.objects.create(
        lead=leads["ada"],
        channel=Conversation.Channel.SMS,
        provider_id="conv_abc123",
        started_at=STARTED,
    )
    Message.objects.create(
        conversation=conversation,
        lead=leads["ada"],
        role=Message.Role.CUSTOMER,
        body="Is the plumber coming today?",
        provider_message_id="SM0001",
        created_at=STARTED,
    )
    response = admin_client.get(reverse("admin:leads_conversation_change", args=[conversation.pk]))
    assert response.status_code == 200
    assert "provider_id" not in response.context["adminform"].form.fields
    assert b"conv_abc123" in response.content
    [inline] = response.context["inline_admin_formsets"]
    assert inline.opts.model is Message
    assert [form.instance.body for form in inline.formset.forms] == ["Is the plumber coming today?"]
    assert "provider_message_id" not in inline.formset.forms[0].fields
    assert b"SM0001" in response.content
    assert b"Is the plumber coming today?" in response.content


@pytest.mark.django_db
def test_it_lists_conversations(admin_client, leads):
    Conversation.objects.create(
        lead=leads["grace"], channel=Conversation.Channel.VOICE, started_at=STARTED
    )
    response = admin_client.get(reverse("admin:leads_conversation_changelist"))
    assert response.status_code == 200
    assert [c.lead.name for c in response.context["cl"].result_list] == ["Grace Hopper"]


@pytest.mark.django_db
def test_it_lists_and_shows_organizations(admin_client, acme):
    response = admin_client.get(reverse("admin:leads_organization_changelist"))
    assert response.status_code == 200
    assert [org.name for org in response.context["cl"].result_list] == ["Acme Plumbing"]

    response = admin_client.get(reverse("admin:leads_organization_change", args=[acme.pk]))
    assert response.status_code == 200
    [inline] = response.context["inline_admin_formsets"]
    assert inline.opts.model is PhoneNumber
    assert b"+15550001111" in response.content


@pytest.mark.django_db
def test_it_searches_organizations_by_number(admin_client, acme):
    Organization.objects.create(name="Globex")
    url = reverse("admin:leads_organization_changelist")
    response = admin_client.get(url, {"q": "0001111"})
    assert [org.name for org in response.context["cl"].result_list] == ["Acme Plumbing"]


# --- the cache switch -----------------------------------------------------------------------


def switch_change_url() -> str:
    switch.read_state()  # first boot creates the row
    return reverse("admin:monitoring_cacheswitch_change", args=[CacheSwitch.SINGLETON_ID])


@pytest.mark.django_db
@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_turns_caching_off_through_the_service(admin_client, admin_user):
    response = admin_client.post(switch_change_url(), {"reason": "incident 7"})
    assert response.status_code == 302
    audit = SwitchAudit.objects.get()
    assert (
        audit.actor,
        audit.action,
        audit.source,
        audit.reason,
        audit.old_enabled,
        audit.new_enabled,
        audit.generation,
    ) == (admin_user.username, "disable", "admin", "incident 7", True, False, 1)
    row = CacheSwitch.objects.get()
    assert (row.enabled, row.changed_by, row.reason) == (False, admin_user.username, "incident 7")


@pytest.mark.django_db
@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_turns_caching_back_on_with_a_new_generation(admin_client):
    url = switch_change_url()
    admin_client.post(url, {"reason": "incident 7"})
    response = admin_client.post(url, {"enabled": "on", "reason": "resolved"})
    assert response.status_code == 302
    assert list(
        SwitchAudit.objects.order_by("id").values_list("action", "source", "generation")
    ) == [("disable", "admin", 1), ("enable", "admin", 2)]
    assert CacheSwitch.objects.get().enabled is True


@pytest.mark.django_db
@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_requires_a_reason_to_flip_the_switch(admin_client):
    response = admin_client.post(switch_change_url(), {"reason": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"reason": ["This field is required."]}
    assert SwitchAudit.objects.count() == 0
    assert CacheSwitch.objects.get().enabled is True


@pytest.mark.django_db
@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=False)
def test_it_does_not_flip_a_switch_pinned_by_the_environment(admin_client):
    response = admin_client.post(switch_change_url(), {"reason": "try"})
    assert response.status_code == 200  # the form again, with the reason it was refused
    assert response.context["adminform"].form.non_field_errors() == [
        "The switch cannot be flipped: caching is pinned off by the environment "
        "(REDIS_ENABLED=false)."
    ]
    assert list(get_messages(response.wsgi_request)) == []
    assert LogEntry.objects.count() == 0
    assert SwitchAudit.objects.count() == 0
    assert CacheSwitch.objects.get().enabled is True


@pytest.mark.django_db
def test_it_cannot_add_or_delete_the_switch(admin_client):
    url = switch_change_url()
    assert admin_client.get(reverse("admin:monitoring_cacheswitch_add")).status_code == 403
    delete_url = reverse("admin:monitoring_cacheswitch_delete", args=[CacheSwitch.SINGLETON_ID])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert admin_client.get(url).status_code == 200
    assert CacheSwitch.objects.count() == 1


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


@pytest.mark.django_db
def test_it_lets_no_one_flip_the_switch_in_the_admin_without_the_flip_permission(client):
    editor = staff(
        "eve", permissions=("monitoring.change_cacheswitch", "monitoring.view_cacheswitch")
    )
    client.force_login(editor)
    url = switch_change_url()
    before = CacheSwitch.objects.get().enabled

    response = client.post(url, {"enabled": "" if before else "on", "reason": "try it"})

    assert response.status_code == 403
    assert CacheSwitch.objects.get().enabled is before
    assert not SwitchAudit.objects.exists()
