"""SMS consent through the real webhook: Twilio's opt-out keywords mark the lead opted out
(when, which keyword) and silence every automatic reply to it; START/UNSTOP bring it back;
HELP gets the organization's help text; the lead page and the call context show the state."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leads import services
from leads.models import Lead, Message, Organization
from leads.services import consent
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.twilio_support import EMPTY_TWIML, SMS_PATH, post_twilio, sms, twilio_account
from tests.personas import signed_in, viewer

pytestmark = pytest.mark.django_db(transaction=True)

AUTO_REPLY = "Thanks, we will call you back."
HELP = "Bike shop: call +15555550100. Reply STOP to opt out."


@pytest.fixture(autouse=True)
def _twilio_account():
    with twilio_account():
        yield


@pytest.fixture
def org() -> Organization:
    org = make_org()
    Organization.objects.filter(pk=org.pk).update(sms_auto_reply=AUTO_REPLY, sms_help_text=HELP)
    return org


def text(body: str, n: int) -> str:
    response = post_twilio(SMS_PATH, sms(Body=body, MessageSid=f"SM{n:032d}"))
    assert response.status_code == 200
    return response.content.decode()


def twiml(reply: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{reply}</Message></Response>'


@pytest.mark.parametrize("word", sorted(consent.OPT_OUT))
def test_it_opts_a_lead_out_on_every_twilio_keyword_and_replies_nothing(org, word):
    assert text(f"  {word.lower()}. ", 1) == EMPTY_TWIML
    lead = Lead.objects.get()
    assert lead.sms_opted_out_at is not None
    assert lead.sms_opt_out_keyword == word
    assert list(Message.objects.values_list("role", "body")) == [
        ("customer", f"  {word.lower()}. ")
    ]


def test_it_sends_no_automatic_reply_to_an_opted_out_number(org):
    assert text("Do you have e-bikes?", 1) == twiml(AUTO_REPLY)
    assert text("STOP", 2) == EMPTY_TWIML
    assert text("Do you still have e-bikes?", 3) == EMPTY_TWIML
    assert list(Message.objects.order_by("id").values_list("role", flat=True)) == [
        "customer",
        "agent",
        "customer",
        "customer",
    ]


def test_it_brings_the_lead_back_on_start_or_unstop(org):
    text("STOP", 1)
    assert text("unstop", 2) == EMPTY_TWIML
    lead = Lead.objects.get()
    assert (lead.sms_opted_out_at, lead.sms_opt_out_keyword) == (None, "")
    assert text("Hello again", 3) == twiml(AUTO_REPLY)
    text("QUIT", 4)
    text("Start", 5)
    assert Lead.objects.get().sms_opted_out_at is None


def test_it_keeps_the_first_opt_out_time_when_stop_comes_again(org):
    text("STOP", 1)
    first = Lead.objects.get().sms_opted_out_at
    text("END", 2)
    lead = Lead.objects.get()
    assert (lead.sms_opted_out_at, lead.sms_opt_out_keyword) == (first, "STOP")


def test_it_answers_help_with_the_organizations_text_opted_out_or_not(org):
    assert text("help", 1) == twiml(HELP)
    text("STOP", 2)
    assert text("HELP", 3) == twiml(HELP)
    Organization.objects.filter(pk=org.pk).update(sms_help_text="")
    assert text("Help!", 4) == twiml(consent.DEFAULT_HELP)


def test_it_takes_a_keyword_inside_a_sentence_as_an_ordinary_text(org):
    assert text("please stop calling me at work", 1) == twiml(AUTO_REPLY)
    assert Lead.objects.get().sms_opted_out_at is None


def test_it_shows_the_state_on_the_lead_page_and_in_the_call_context(org):
    text("Hi", 1)
    lead = Lead.objects.get()
    assert services.call_context(ORG_NUMBER, CALLER)["lead"]["sms_opted_out"] is False
    text("STOP", 2)
    context = services.call_context(ORG_NUMBER, CALLER)["lead"]
    assert (context["sms_opted_out"], context["sms_opt_out_keyword"]) == (True, "STOP")
    page = signed_in(viewer()).get(f"/dashboard/leads/{lead.pk}/").content.decode()
    assert "<strong>opted out</strong> (STOP, " in page


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=40))
def test_it_reads_a_keyword_only_from_a_body_that_is_nothing_else(body):
    found = consent.keyword(body)
    word = body.strip().strip(".!?,;:").strip().upper()
    if found is None:
        assert word not in consent.OPT_OUT | consent.OPT_IN | consent.HELP
    else:
        assert found[1] == word
