"""The admin's lead, conversation and organization pages, as a superuser: they load, search and
filter, and refuse a phone number not in E.164 form."""

import pytest
from django.urls import reverse

from leads.models import Conversation, Message, Organization, PhoneNumber
from tests.leads.admin_support import STARTED, changelist_names, lead_form_data

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
