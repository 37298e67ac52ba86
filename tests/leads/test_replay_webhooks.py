"""`manage.py replay_webhooks`: process again the deliveries whose processing failed, once
each, listing them without processing on --dry-run, and exiting 1 while any still fails."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError

from leads.models import Message, Organization, PhoneNumber, WebhookEvent
from leads.services import sms as sms_service
from monitoring.cache import gate
from tests.factories import CALLER, make_org
from tests.leads.twilio_support import (
    EMPTY_TWIML,
    OUTBOUND_SID,
    SMS_PATH,
    STATUS_PATH,
    outbound_text,
    post_twilio,
    sms,
    status,
    stored,
    twilio_account,
)

pytestmark = pytest.mark.django_db(transaction=True)

FIRST_NUMBER, SECOND_NUMBER = "+15559999991", "+15559999992"
FIRST_SID, SECOND_SID = "SM00000000000000000000000000000001", "SM00000000000000000000000000000002"


@pytest.fixture(autouse=True)
def _twilio_account():
    with twilio_account():
        yield


@pytest.fixture
def org() -> Organization:
    org = make_org()
    Organization.objects.filter(pk=org.pk).update(sms_auto_reply="Thanks, we will call you.")
    return org


@pytest.fixture
def failed(org) -> list[WebhookEvent]:
    """Two texts to numbers no organization answers on yet: both recorded as failed."""
    for number, sid in [(FIRST_NUMBER, FIRST_SID), (SECOND_NUMBER, SECOND_SID)]:
        response = post_twilio(SMS_PATH, sms(To=number, MessageSid=sid))
        assert response.content.decode() == EMPTY_TWIML
    events = list(WebhookEvent.objects.order_by("id"))
    assert [(e.status, e.attempts) for e in events] == [("failed", 1), ("failed", 1)]
    return events


def add_number(org: Organization, e164: str) -> None:
    """The number added, with the cache flush the admin does when an organization's numbers
    change (a cached "no organization answers on it" would otherwise outlive the change)."""
    PhoneNumber.objects.create(organization=org, e164=e164)
    gate.flush(actor="test", reason=f"{e164} added", source="admin")


def replay(*args: str) -> str:
    out = StringIO()
    call_command("replay_webhooks", *args, stdout=out)
    return out.getvalue()


def unknown(number: str) -> str:
    return f"leads.services.sms.UnknownNumber: no organization answers on {number}"


def states(events: list[WebhookEvent]) -> list[tuple[str, int]]:
    for event in events:
        event.refresh_from_db()
    return [(e.status, e.attempts) for e in events]


def test_it_lists_failed_deliveries_without_processing_them_on_dry_run(org, failed):
    add_number(org, FIRST_NUMBER)
    add_number(org, SECOND_NUMBER)
    before = stored()
    first, second = failed
    assert replay("--dry-run") == (
        "2 failed deliveries\n"
        f"  would replay #{first.pk} twilio sms {FIRST_SID}: {unknown(FIRST_NUMBER)}\n"
        f"  would replay #{second.pk} twilio sms {SECOND_SID}: {unknown(SECOND_NUMBER)}\n"
    )
    assert stored() == before
    assert states(failed) == [("failed", 1), ("failed", 1)]
    assert Message.objects.count() == 0


def test_it_replays_only_the_deliveries_named_by_id(org, failed):
    add_number(org, FIRST_NUMBER)
    add_number(org, SECOND_NUMBER)
    first, second = failed
    assert replay("--id", str(first.pk)) == (
        f"1 failed delivery\n  #{first.pk} twilio sms {FIRST_SID}: processed\n"
    )
    assert states(failed) == [("processed", 2), ("failed", 1)]
    assert list(Message.objects.order_by("id").values_list("provider_message_id", "role")) == [
        (FIRST_SID, "customer"),
        (None, "agent"),
    ]


def test_it_exits_with_an_error_while_a_delivery_still_fails(org, failed):
    add_number(org, FIRST_NUMBER)
    first, second = failed
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("replay_webhooks", stdout=out)
    assert str(raised.value) == "1 delivery still fails"
    assert raised.value.returncode == 1
    assert out.getvalue() == (
        "2 failed deliveries\n"
        f"  #{first.pk} twilio sms {FIRST_SID}: processed\n"
        f"  #{second.pk} twilio sms {SECOND_SID}: failed again: {unknown(SECOND_NUMBER)}\n"
    )
    assert states(failed) == [("processed", 2), ("failed", 2)]
    second.refresh_from_db()
    assert second.error == unknown(SECOND_NUMBER)
    assert Message.objects.filter(provider_message_id=SECOND_SID).exists() is False


def test_it_exits_with_an_error_when_nothing_can_be_replayed_yet(org, failed):
    with pytest.raises(CommandError, match="^2 deliveries still fail$"):
        replay()
    assert states(failed) == [("failed", 2), ("failed", 2)]
    assert Message.objects.count() == 0


def test_it_is_idempotent_on_a_second_run(org, failed):
    add_number(org, FIRST_NUMBER)
    add_number(org, SECOND_NUMBER)
    first, second = failed
    assert replay() == (
        "2 failed deliveries\n"
        f"  #{first.pk} twilio sms {FIRST_SID}: processed\n"
        f"  #{second.pk} twilio sms {SECOND_SID}: processed\n"
    )
    after_first_run = stored()
    assert len(after_first_run["messages"]) == 4  # two texts, two auto-replies

    assert replay() == "0 failed deliveries\n"
    assert replay("--id", str(first.pk)) == "0 failed deliveries\n"
    assert stored() == after_first_run
    assert states(failed) == [("processed", 2), ("processed", 2)]


def test_it_replays_only_the_provider_asked_for(org, failed):
    add_number(org, FIRST_NUMBER)
    add_number(org, SECOND_NUMBER)
    assert replay("--provider", "elevenlabs") == "0 failed deliveries\n"
    assert states(failed) == [("failed", 1), ("failed", 1)]
    assert replay("--provider", "twilio", "--limit", "1").startswith("1 failed delivery\n")
    assert states(failed) == [("processed", 2), ("failed", 1)]


def test_it_replays_a_status_callback_that_failed_on_a_database_outage(org, monkeypatch):
    text = outbound_text(org, delivery_status="sent")

    def outage(*args, **kwargs):
        raise OperationalError("the database system is shutting down")

    with monkeypatch.context() as patched:
        patched.setattr(sms_service, "update_delivery_status", outage)
        response = post_twilio(STATUS_PATH, status("delivered"))
    # 200 on purpose (the delivery is kept for replay), like Twilio's own retries.
    assert response.status_code == 200
    assert response.content.decode() == EMPTY_TWIML
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts) == ("failed", 1)
    assert event.error == "django.db.utils.OperationalError: the database system is shutting down"
    text.refresh_from_db()
    assert text.delivery_status == "sent"

    label = f"#{event.pk} twilio sms_status {OUTBOUND_SID}:delivered"
    assert replay() == f"1 failed delivery\n  {label}: processed\n"
    text.refresh_from_db()
    assert text.delivery_status == "delivered"
    assert states([event]) == [("processed", 2)]


def test_it_rolls_back_a_text_whose_processing_fails_halfway_and_replays_it_whole(org, monkeypatch):
    real_add_message = sms_service.add_message

    def fails_on_the_reply(conversation_id, role, body, **kwargs):
        if role == Message.Role.AGENT:
            raise OperationalError("connection lost")
        return real_add_message(conversation_id, role, body, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(sms_service, "add_message", fails_on_the_reply)
        response = post_twilio(SMS_PATH, sms())
    assert response.content.decode() == EMPTY_TWIML
    event = WebhookEvent.objects.get()
    assert (event.status, event.error) == (
        "failed",
        "django.db.utils.OperationalError: connection lost",
    )
    assert stored() | {"events": []} == {
        "events": [],
        "leads": [],
        "conversations": [],
        "messages": [],
    }

    replay()
    assert states([event]) == [("processed", 2)]
    assert list(Message.objects.order_by("id").values_list("role", "lead__phone")) == [
        ("customer", CALLER),
        ("agent", CALLER),
    ]
