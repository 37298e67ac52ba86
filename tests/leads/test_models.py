"""The lead models' constraints, enforced by the real database, and their phone validation."""

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from leads.models import Conversation, Lead, Message, Organization, PhoneNumber

STARTED = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def acme(db):
    return Organization.objects.create(name="Acme")


@pytest.fixture
def globex(db):
    return Organization.objects.create(name="Globex")


@pytest.fixture
def lead(acme):
    return Lead.objects.create(organization=acme, phone="+15551234567", name="Ada")


def make_conversation(lead, provider_id=None):
    return Conversation.objects.create(
        lead=lead, channel=Conversation.Channel.VOICE, provider_id=provider_id, started_at=STARTED
    )


def make_message(conversation, provider_message_id=None):
    return Message.objects.create(
        conversation=conversation,
        lead=conversation.lead,
        role=Message.Role.CUSTOMER,
        body="hello",
        provider_message_id=provider_message_id,
        created_at=STARTED,
    )


@pytest.mark.django_db
def test_it_refuses_the_same_phone_twice_in_one_organization(acme, lead):
    with pytest.raises(IntegrityError), transaction.atomic():
        Lead.objects.create(organization=acme, phone="+15551234567", name="Impostor")
    assert list(Lead.objects.values_list("name", flat=True)) == ["Ada"]


@pytest.mark.django_db
def test_it_allows_the_same_phone_in_two_organizations(globex, lead):
    other = Lead.objects.create(organization=globex, phone="+15551234567")
    assert Lead.objects.filter(phone="+15551234567").count() == 2
    assert other.organization == globex


@pytest.mark.django_db
def test_it_reports_the_duplicate_phone_in_model_validation(acme, lead):
    duplicate = Lead(organization=acme, phone="+15551234567")
    with pytest.raises(ValidationError) as excinfo:
        duplicate.full_clean()
    assert excinfo.value.messages == ["Lead with this Organization and Phone already exists."]


@pytest.mark.django_db
def test_it_refuses_a_conversation_provider_id_twice(lead):
    make_conversation(lead, "conv_123")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_conversation(lead, "conv_123")
    assert Conversation.objects.filter(provider_id="conv_123").count() == 1


@pytest.mark.django_db
def test_it_allows_many_conversations_without_a_provider_id(lead):
    make_conversation(lead)
    make_conversation(lead)
    make_conversation(lead, "conv_1")
    assert Conversation.objects.filter(provider_id__isnull=True).count() == 2
    assert Conversation.objects.count() == 3


@pytest.mark.django_db
def test_it_refuses_a_provider_message_id_twice(lead):
    conversation = make_conversation(lead)
    make_message(conversation, "SM123")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_message(make_conversation(lead), "SM123")
    assert Message.objects.filter(provider_message_id="SM123").count() == 1


@pytest.mark.django_db
def test_it_allows_many_messages_without_a_provider_message_id(lead):
    conversation = make_conversation(lead)
    make_message(conversation)
    make_message(conversation)
    make_message(conversation, "SM1")
    assert Message.objects.filter(provider_message_id__isnull=True).count() == 2
    assert Message.objects.count() == 3


@pytest.mark.django_db
def test_it_refuses_a_number_two_organizations_answer_on(acme, globex):
    PhoneNumber.objects.create(organization=acme, e164="+15550001111")
    with pytest.raises(IntegrityError), transaction.atomic():
        PhoneNumber.objects.create(organization=globex, e164="+15550001111")
    assert list(PhoneNumber.objects.values_list("organization__name", flat=True)) == ["Acme"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("phone", "message"),
    [
        ("(555) 123-4567", "store phone numbers in E.164 form (+15551234567)"),
        ("15551234567", "store phone numbers in E.164 form (+15551234567)"),
        ("+1 555 123 4567", "store phone numbers in E.164 form (+15551234567)"),
        ("abc", "'abc' contains characters a phone number cannot have"),
        ("+1 555", "'+1 555' has 4 digits; a full number has 8 to 15"),
    ],
)
def test_it_rejects_a_lead_phone_not_in_e164_form(acme, phone, message):
    with pytest.raises(ValidationError) as excinfo:
        Lead(organization=acme, phone=phone).full_clean()
    assert excinfo.value.message_dict == {"phone": [message]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("e164", "message"),
    [
        ("00442079460958", "store phone numbers in E.164 form (+442079460958)"),
        ("555-CALL-NOW", "'555-CALL-NOW' contains characters a phone number cannot have"),
    ],
)
def test_it_rejects_an_organization_number_not_in_e164_form(acme, e164, message):
    with pytest.raises(ValidationError) as excinfo:
        PhoneNumber(organization=acme, e164=e164).full_clean()
    assert excinfo.value.message_dict == {"e164": [message]}


@pytest.mark.django_db
def test_it_accepts_e164_phones_in_model_validation(acme):
    Lead(organization=acme, phone="+442079460958").full_clean()
    PhoneNumber(organization=acme, e164="+15550001111").full_clean()
