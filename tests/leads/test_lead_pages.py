"""The lead pages of the dashboard: the list (search by name or phone, status filter, counts by
status) and each lead's page with its conversation timeline; plus the timeline's cache entry,
dropped by every write to the lead."""

import pytest
from django.test import Client, override_settings

from leads import services
from leads.models import Lead, Message
from monitoring.cache import gate
from tests.conftest import turn_caching
from tests.factories import CALLER, at, make_org
from tests.monitoring.dashboard_support import Page, page
from tests.personas import plain_user, signed_in, viewer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_redis(request):
    """Straight from the database, unless a test asks for the shared Redis."""
    if "shared_redis" in request.fixturenames:
        yield
        return
    with override_settings(REDIS_URL=None):
        yield


@pytest.fixture
def olivia():
    return signed_in(viewer("olivia"))


@pytest.fixture
def org():
    return make_org()


def make_lead(org, phone: str, name: str, status: str = "new", contacted: int | None = None):
    lead = Lead.objects.create(organization=org, phone=phone, name=name, status=status)
    if contacted is not None:
        services.update_lead(lead.id, last_contact_at=at(contacted))
    return lead


@pytest.fixture
def leads(org):
    return {
        "ada": make_lead(org, "+15551234567", "Ada Lovelace", "hot", contacted=30),
        "grace": make_lead(org, "+15559876543", "Grace Hopper", "new", contacted=20),
        "alan": make_lead(org, "+442079460958", "Alan Turing", "hot", contacted=10),
        "anon": make_lead(org, "+15550009999", "", "lost", contacted=5),
    }


def rows(response, leads) -> list[str]:
    names = {f"lead-row-{lead.id}": name for name, lead in leads.items()}
    return [names[testid] for testid in page(response).ids("lead-row-")]


# --- who gets in ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/leads/", "/dashboard/leads/1/"])
def test_it_sends_anonymous_visitors_to_the_login_page(path):
    response = Client().get(path)
    assert (response.status_code, response["Location"]) == (302, f"/accounts/login/?next={path}")


@pytest.mark.parametrize("path", ["/dashboard/leads/", "/dashboard/leads/1/"])
def test_it_forbids_users_who_are_not_staff(path):
    assert signed_in(plain_user("mark")).get(path).status_code == 403


# --- the list -------------------------------------------------------------------------------


def test_it_lists_leads_most_recently_contacted_first_with_counts_by_status(olivia, leads):
    response = olivia.get("/dashboard/leads/")
    listing = page(response)

    assert rows(response, leads) == ["ada", "grace", "alan", "anon"]
    counts = {testid: listing.text(testid) for testid in listing.ids("lead-count-")}
    assert counts == {
        "lead-count-total": "all 4",
        "lead-count-new": "new 1",
        "lead-count-contacted": "contacted 0",
        "lead-count-qualified": "qualified 0",
        "lead-count-hot": "hot 2",
        "lead-count-customer": "customer 0",
        "lead-count-lost": "lost 1",
    }
    assert listing.text(f"lead-link-{leads['anon'].id}") == "(no name)"
    assert listing.attrs(f"lead-link-{leads['ada'].id}")["href"] == (
        f"/dashboard/leads/{leads['ada'].id}/"
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=hopper", ["grace"]),
        ("q=a", ["ada", "grace", "alan"]),
        ("q=555-123", ["ada"]),
        ("q=%2B44", ["alan"]),
        ("status=hot", ["ada", "alan"]),
        ("q=ada&status=hot", ["ada"]),
        ("q=ada&status=new", []),
    ],
)
def test_it_searches_by_name_or_phone_and_filters_by_status(olivia, leads, query, expected):
    assert rows(olivia.get(f"/dashboard/leads/?{query}"), leads) == expected


def test_it_keeps_the_counts_of_every_status_while_filtering(olivia, leads):
    listing = page(olivia.get("/dashboard/leads/?status=hot"))
    assert listing.text("lead-count-total") == "all 4"
    assert "count-chip--current" in listing.attrs("lead-count-hot")["class"]
    assert listing.text("lead-total") == "2 leads match."


def test_it_ignores_a_status_it_does_not_know(olivia, leads):
    assert rows(olivia.get("/dashboard/leads/?status=vip"), leads) == [
        "ada",
        "grace",
        "alan",
        "anon",
    ]


def test_it_pages_through_many_leads(olivia, org):
    for n in range(30):
        make_lead(org, f"+1555100{n:04d}", f"Lead {n:02d}", contacted=n)
    first = page(olivia.get("/dashboard/leads/"))
    second = page(olivia.get("/dashboard/leads/?page=2"))
    assert (len(first.ids("lead-row-")), len(second.ids("lead-row-"))) == (25, 5)
    assert "Page 2 of 2" in second.text("lead-pager")


# --- a lead's page --------------------------------------------------------------------------


@pytest.fixture
def history(org):
    """Ada: a voice call with its transcript, then an SMS thread."""
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    services.update_lead(lead["id"], name="Ada Lovelace", status="qualified")
    call = services.open_conversation(lead["id"], "voice", started_at=at(0))
    said = [
        services.add_message(call.id, "agent", "Pedal Bikes, how can I help?", created_at=at(0)),
        services.add_message(call.id, "customer", "Do you sell cargo bikes?", created_at=at(1)),
    ]
    services.complete_conversation(call.id, ended_at=at(5), summary="Wants a cargo bike.")
    thread = services.open_conversation(lead["id"], "sms", started_at=at(60))
    texted = [
        services.add_message(thread.id, "customer", "Is it in stock?", created_at=at(60)),
        services.add_message(thread.id, "agent", "Yes, two left.", created_at=at(61)),
    ]
    return {"lead": lead, "call": call, "thread": thread, "messages": said + texted}


def test_it_shows_a_lead_with_its_conversations_oldest_first(olivia, history):
    lead = page(olivia.get(f"/dashboard/leads/{history['lead']['id']}/"))

    assert lead.text("lead-name") == "Ada Lovelace +15551230001"
    assert lead.text("lead-status") == "qualified"
    assert lead.text("lead-organization") == "Pedal Bikes"
    assert lead.text("lead-conversation-count") == "2"
    call, thread = history["call"], history["thread"]
    assert lead.ids("conversation-") == [
        f"conversation-{call.id}",
        f"conversation-{call.id}-summary",
        f"conversation-{thread.id}",
    ]
    assert lead.attrs(f"conversation-{call.id}")["data-channel"] == "voice"
    assert lead.attrs(f"conversation-{thread.id}")["data-channel"] == "sms"
    assert lead.text(f"conversation-{call.id}-summary") == "Wants a cargo bike."
    assert lead.ids("message-") == [f"message-{m.id}" for m in history["messages"]]
    first = history["messages"][0]
    assert lead.attrs(f"message-{first.id}")["data-role"] == "agent"
    assert "Pedal Bikes, how can I help?" in lead.text(f"message-{first.id}")
    assert lead.attrs("timeline")["data-timeline-url"] == (
        f"/dashboard/leads/{history['lead']['id']}/timeline"
    )


def test_it_serves_the_timeline_alone_for_the_pages_live_updates(olivia, history):
    response = olivia.get(f"/dashboard/leads/{history['lead']['id']}/timeline")
    fragment = Page(response.content.decode())
    assert response.status_code == 200
    assert b"<html" not in response.content
    assert fragment.ids("message-") == [f"message-{m.id}" for m in history["messages"]]


def test_it_answers_404_for_an_unknown_lead(olivia):
    assert olivia.get("/dashboard/leads/999/").status_code == 404
    assert olivia.get("/dashboard/leads/999/timeline").status_code == 404


def test_it_says_so_when_a_lead_has_no_conversations(olivia, leads):
    assert "timeline-empty" in page(olivia.get(f"/dashboard/leads/{leads['grace'].id}/"))


# --- the timeline's cache entry -------------------------------------------------------------


def test_it_reads_the_timeline_through_the_cache_and_drops_it_on_a_new_message(
    shared_redis, history, django_capture_on_commit_callbacks
):
    turn_caching(True)
    lead_id = history["lead"]["id"]
    # Read inside the test's transaction: stored once it commits (here: when the capture runs).
    with django_capture_on_commit_callbacks(execute=True):
        services.lead_timeline(lead_id)
    cached = services.lead_timeline(lead_id)
    assert gate.stats.snapshot()["timeline"]["hits"] == 1

    with django_capture_on_commit_callbacks(execute=True):
        added = services.add_message(history["thread"].id, "customer", "Great, I'll come by.")

    fresh = services.lead_timeline(lead_id)
    assert gate.stats.snapshot()["timeline"]["misses"] == 2
    assert [m["id"] for m in cached["conversations"][-1]["messages"]] == [
        m.id for m in history["messages"][2:]
    ]
    assert fresh["conversations"][-1]["messages"][-1]["id"] == added.id


def test_it_drops_the_timeline_when_a_queryset_update_bypasses_the_services(
    shared_redis, history, django_capture_on_commit_callbacks
):
    turn_caching(True)
    lead_id = history["lead"]["id"]
    services.lead_timeline(lead_id)

    with django_capture_on_commit_callbacks(execute=True):
        Lead.objects.filter(phone=CALLER).update(name="Ada King")

    assert services.lead_timeline(lead_id)["lead"]["name"] == "Ada King"


def test_it_answers_the_same_timeline_with_caching_off(history):
    timeline = services.lead_timeline(history["lead"]["id"])
    assert [c["channel"] for c in timeline["conversations"]] == ["voice", "sms"]
    assert [m["role"] for m in timeline["conversations"][0]["messages"]] == [
        Message.Role.AGENT,
        Message.Role.CUSTOMER,
    ]
    assert timeline["organization"]["name"] == "Pedal Bikes"
    assert services.lead_timeline(999_999) is None
