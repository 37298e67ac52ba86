"""The ElevenLabs conversation-initiation webhook's answer (on the caller's dial tone): the
complete set of dynamic variables from the cached call context, the time and hours in the
organization's zone, and the call recorded off the response path."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from leads.models import Conversation, Lead, Organization, PhoneNumber, WebhookEvent
from leads.webhooks import variables
from leads.webhooks.deferred import writer
from monitoring import counters
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.initiation_support import (
    CALL_SID,
    CLOCK_KEYS,
    FACTORY_HOURS,
    NOW,
    answer,
    assert_nothing_stored,
    fixture_payload,
    initiate,
    known_caller,
    known_caller_variables,
    without_clock,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("initiation_settings", "caching_on"),
]


# --- the answer ---------------------------------------------------------------------------


def test_it_answers_a_known_caller_with_every_variable(frozen_now):
    org = make_org()
    known_caller(org)
    response = initiate()
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert set(response.json()["dynamic_variables"]) == set(variables.DEFAULTS)
    assert response.json() == answer(known_caller_variables(org))


def test_it_answers_an_unknown_caller_with_the_organization_and_defaults(frozen_now):
    org = make_org()
    response = initiate()
    assert response.status_code == 200
    assert set(response.json()["dynamic_variables"]) == set(variables.DEFAULTS)
    assert response.json() == answer(
        {
            **variables.DEFAULTS,
            "customer_phone": CALLER,
            "organization_name": "Pedal Bikes",
            "organization_id": str(org.id),
            "location_address": "1 Main St, Springfield",
            "business_hours": FACTORY_HOURS,
            "current_time": "10:00",
            "current_day": "Monday",
            "current_datetime": "2026-03-02T10:00-05:00",
            "dynamic_greeting": "Thanks for calling Pedal Bikes! How can I help you today?",
            "store_is_open": True,
            "store_status": "open until 18:00",
        }
    )


def test_it_gives_the_time_and_hours_in_the_organizations_time_zone(frozen_now):
    org = Organization.objects.create(
        name="Tokyo Cycles",
        timezone="Asia/Tokyo",
        business_hours={day: [["09:00", "18:00"]] for day in ["mon", "tue", "wed", "thu", "fri"]},
    )
    PhoneNumber.objects.create(organization=org, e164=ORG_NUMBER)
    dynamic = initiate().json()["dynamic_variables"]
    # 15:00 UTC on Monday is midnight starting Tuesday in Tokyo.
    assert {k: dynamic[k] for k in CLOCK_KEYS | {"business_hours"}} == {
        "current_time": "00:00",
        "current_day": "Tuesday",
        "current_datetime": "2026-03-03T00:00+09:00",
        "store_is_open": False,
        "store_status": "closed, opens today at 09:00",
        "business_hours": "Mon 09:00-18:00; Tue 09:00-18:00; Wed 09:00-18:00; "
        "Thu 09:00-18:00; Fri 09:00-18:00; Sat closed; Sun closed",
    }


NY = ZoneInfo("America/New_York")
WEEKDAYS = {day: [["09:00", "12:00"], ["13:00", "18:00"]] for day in ["mon", "tue", "wed", "thu"]}
WEEKDAYS["fri"] = [["09:00", "17:00"]]


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (datetime(2026, 3, 2, 9, 0, tzinfo=NY), (True, "open until 12:00")),
        (datetime(2026, 3, 2, 11, 59, tzinfo=NY), (True, "open until 12:00")),
        (datetime(2026, 3, 2, 12, 30, tzinfo=NY), (False, "closed, opens today at 13:00")),
        (datetime(2026, 3, 2, 17, 0, tzinfo=NY), (True, "open until 18:00")),
        (datetime(2026, 3, 2, 8, 59, tzinfo=NY), (False, "closed, opens today at 09:00")),
        (datetime(2026, 3, 2, 18, 0, tzinfo=NY), (False, "closed, opens Tuesday at 09:00")),
        (datetime(2026, 3, 6, 17, 0, tzinfo=NY), (False, "closed, opens Monday at 09:00")),
        (datetime(2026, 3, 7, 10, 0, tzinfo=NY), (False, "closed, opens Monday at 09:00")),
    ],
)
def test_it_tells_whether_the_store_is_open(local, expected):
    assert variables.store_status(WEEKDAYS, local) == expected


def test_it_describes_unknown_closed_and_malformed_hours():
    monday = datetime(2026, 3, 2, 10, 0, tzinfo=NY)
    assert variables.store_status({}, monday) == (False, "unknown")
    assert variables.store_status({"mon": [], "sun": []}, monday) == (False, "closed")
    assert variables.store_status({"mon": [["9am", "5pm"], ["10:00", "11:00"]]}, monday) == (
        True,
        "open until 11:00",
    )
    assert variables.describe_hours({}) == ""
    assert variables.describe_hours(WEEKDAYS) == (
        "Mon 09:00-12:00, 13:00-18:00; Tue 09:00-12:00, 13:00-18:00; "
        "Wed 09:00-12:00, 13:00-18:00; Thu 09:00-12:00, 13:00-18:00; Fri 09:00-17:00; "
        "Sat closed; Sun closed"
    )


def test_it_detects_an_outbound_call_and_answers_for_the_number_called(frozen_now):
    org = make_org()
    lead = known_caller(org)
    response = initiate(fixture_payload(caller_id=ORG_NUMBER, called_number=CALLER))
    assert response.status_code == 200
    assert response.json() == answer(
        known_caller_variables(
            org,
            is_outbound=True,
            call_type="outbound",
            dynamic_greeting="Hi Dana Scully, this is Pedal Bikes calling.",
        )
    )
    writer.drain()
    call = Conversation.objects.get(call_sid=CALL_SID)
    assert (call.lead_id, call.status) == (lead["id"], "initiated")
    assert not Lead.objects.filter(phone=ORG_NUMBER).exists()


def test_it_records_the_call_off_the_response_path(frozen_now):
    org = make_org()
    assert initiate().status_code == 200
    writer.drain()
    lead = Lead.objects.get()
    assert (lead.organization_id, lead.phone, lead.status) == (org.id, CALLER, "new")
    call = Conversation.objects.get()
    assert (call.lead_id, call.channel, call.status) == (lead.id, "voice", "initiated")
    assert (call.call_sid, call.provider_id, call.started_at) == (CALL_SID, None, NOW)
    event = WebhookEvent.objects.get()
    assert (event.provider, event.event_type, event.status, event.error) == (
        "elevenlabs",
        "conversation_initiation",
        "processed",
        "",
    )
    assert event.idempotency_key == f"conversation_initiation:{CALL_SID}"


def test_it_records_a_repeated_initiation_once(frozen_now):
    make_org()
    first = initiate()
    writer.drain()
    again = initiate()
    writer.drain()
    assert (first.status_code, again.status_code) == (200, 200)
    assert set(again.json()["dynamic_variables"]) == set(variables.DEFAULTS)
    assert Conversation.objects.count() == 1
    assert Lead.objects.count() == 1
    event = WebhookEvent.objects.get()
    assert (event.status, event.duplicates) == ("processed", 1)


def test_it_answers_an_unknown_number_with_defaults_and_records_nothing():
    make_org()
    before = counters.snapshot().get("webhook.elevenlabs.initiation_unknown_number", 0)
    response = initiate(fixture_payload(called_number="+15559999999"))
    assert response.status_code == 200
    dynamic = response.json()["dynamic_variables"]
    assert set(dynamic) == set(variables.DEFAULTS)
    assert without_clock(dynamic) == without_clock({**variables.DEFAULTS, "customer_phone": CALLER})
    assert counters.snapshot()["webhook.elevenlabs.initiation_unknown_number"] == before + 1
    assert_nothing_stored()
