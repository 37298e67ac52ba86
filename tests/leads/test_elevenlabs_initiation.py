"""The ElevenLabs conversation-initiation webhook (on the caller's dial tone): the complete set
of dynamic variables from the cached call context, the call recorded off the response path, the
same answer in every cache mode, no SQL and one Redis round trip when warm, a complete answer
with safe defaults when anything behind it fails, and a clear 4xx for every kind of bad input."""

import asyncio
import json
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.test import AsyncClient, Client, override_settings
from django.utils import timezone

from leads import services
from leads.models import Conversation, Lead, Organization, PhoneNumber, WebhookEvent
from leads.services import reads
from leads.webhooks import variables
from leads.webhooks.deferred import writer
from monitoring import counters
from monitoring.cache import gate
from tests.conftest import turn_caching
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.cache_modes import MODES, cache_mode

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/webhooks/elevenlabs/conversation-initiation"
SECRET = "test-initiation-secret"
DATA = Path(__file__).parent / "data"
# A Monday, 10:00 in New York (the factory organization's time zone; EST until March 8).
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
EARLIER = datetime(2026, 2, 27, 15, 0, tzinfo=UTC)
CALL_SID = "CA5f2d0c9e8b7a6f5e4d3c2b1a0f9e8d7c"
FALLBACK = "webhook.elevenlabs.initiation_fallback"
# What depends on the wall clock (the fallback reads it directly, not through timezone.now).
CLOCK_KEYS = {"current_time", "current_datetime", "current_day", "store_is_open", "store_status"}
FACTORY_HOURS = (
    "Mon 09:00-18:00; Tue closed; Wed closed; Thu closed; Fri closed; Sat closed; Sun closed"
)


@pytest.fixture(autouse=True)
def configured():
    with override_settings(
        ELEVENLABS_INITIATION_SECRET=SECRET,
        ELEVENLABS_INITIATION_HEADER="X-Webhook-Secret",
        WEBHOOK_VERIFY=True,
        WEBHOOK_MAX_BODY_BYTES=1024 * 1024,
        # Generous: these tests assert the answer's content, and a loaded machine must not
        # turn it into the fallback (above the hung cache mode's 0.5 s socket timeout, too).
        # The budget itself is tested with its own, short, value.
        INITIATION_TIME_BUDGET=5.0,
        AGENT_LANGUAGE="en",
    ):
        yield


@pytest.fixture(autouse=True)
def caching(shared_redis):
    """Caching on, against a real Redis (this test's keys only)."""
    turn_caching(True)
    yield shared_redis
    writer.drain()  # nothing deferred may outlive the test's tables


@pytest.fixture
def frozen_now(monkeypatch):
    """timezone.now() is NOW everywhere (the view reads it through django.utils.timezone)."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return NOW


def fixture_payload(**changes) -> dict:
    payload = json.loads((DATA / "conversation_initiation.json").read_text())
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not None}


def initiate(
    payload: dict | None = None,
    *,
    body: bytes | None = None,
    secret: str | None = SECRET,
    header: str = "X-Webhook-Secret",
    content_type: str = "application/json",
):
    """POST the way ElevenLabs does: JSON, with the configured secret header."""
    if body is None:
        body = json.dumps(fixture_payload() if payload is None else payload).encode()
    headers = {} if secret is None else {header: secret}
    client = Client(enforce_csrf_checks=True)
    return client.post(PATH, body, content_type=content_type, headers=headers)


def known_caller(org: Organization) -> dict:
    """Dana: qualified, interested in the City E2, one earlier call with a summary."""
    lead, _ = services.find_or_create_lead(org.id, CALLER)
    services.update_lead(
        lead["id"], name="Dana Scully", status=Lead.Status.QUALIFIED, interest={"bike": "City E2"}
    )
    call = services.open_conversation(lead["id"], "voice", provider_id="conv-1", started_at=EARLIER)
    minute = timedelta(minutes=1)
    services.add_message(call.id, "customer", "Do you have e-bikes?", created_at=EARLIER + minute)
    services.add_message(call.id, "agent", "Yes, three models.", created_at=EARLIER + 2 * minute)
    services.complete_conversation(
        call.id, ended_at=EARLIER + 5 * minute, summary="Asked about e-bikes.", title="E-bikes"
    )
    return lead


def known_caller_variables(org: Organization, **changes) -> dict:
    expected = {
        "customer_name": "Dana Scully",
        "customer_phone": CALLER,
        "lead_status": "qualified",
        "bike_interest": "City E2",
        "conversation_context": "customer: Do you have e-bikes?\nagent: Yes, three models.",
        "previous_summary": "Asked about e-bikes.",
        "organization_name": "Pedal Bikes",
        "organization_id": str(org.id),
        "location_address": "1 Main St, Springfield",
        "business_hours": FACTORY_HOURS,
        "current_time": "10:00",
        "current_day": "Monday",
        "current_datetime": "2026-03-02T10:00-05:00",
        "has_customer_name": True,
        "dynamic_greeting": (
            "Hi Dana Scully, welcome back to Pedal Bikes! How can I help you today?"
        ),
        "customer_history": "1 previous conversation; the last on 2026-02-27.",
        "last_topic": "E-bikes",
        "qualification_status": "qualified",
        "interaction_count": 1,
        "last_contact": "2026-02-27T15:02+00:00",
        "is_outbound": False,
        "call_type": "inbound",
        "store_is_open": True,
        "store_status": "open until 18:00",
    }
    expected.update(changes)
    return expected


def answer(dynamic_variables: dict) -> dict:
    return {
        "type": "conversation_initiation_client_data",
        "dynamic_variables": dynamic_variables,
        "conversation_config_override": {
            "agent": {"first_message": dynamic_variables["dynamic_greeting"], "language": "en"}
        },
    }


def without_clock(dynamic_variables: dict) -> dict:
    return {k: v for k, v in dynamic_variables.items() if k not in CLOCK_KEYS}


def fallback_count() -> int:
    return counters.snapshot().get(FALLBACK, 0)


def assert_nothing_stored() -> None:
    writer.drain()
    assert WebhookEvent.objects.count() == 0
    assert Conversation.objects.count() == 0
    assert Lead.objects.count() == 0


def assert_rejected(response, status: int, error: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": error}


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


# --- warm: no SQL, one Redis round trip ---------------------------------------------------


@contextmanager
def sql_in_every_thread(monkeypatch):
    """Every query any thread runs (the view works in a worker thread), as (thread, sql)."""
    seen: list[tuple[str, str]] = []
    original = CursorWrapper._execute_with_wrappers

    def counting(self, sql, params, many, executor):
        seen.append((threading.current_thread().name, sql))
        return original(self, sql, params, many, executor)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counting)
    try:
        yield seen
    finally:
        monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", original)


@contextmanager
def writer_held():
    """The deferred writer busy until the block ends, so what is measured inside is the
    request alone; its jobs run (and are drained) afterwards."""
    release = threading.Event()

    def hold() -> None:
        release.wait(10)

    for _ in range(settings.DEFERRED_WORKERS):  # every worker thread held
        writer.submit(hold)
    try:
        yield
    finally:
        release.set()
        writer.drain()


def commands_during(server, action) -> dict[str, int]:
    before = server.command_calls()
    action()
    after = server.command_calls()
    names = set(before) | set(after)
    return {
        n: after.get(n, 0) - before.get(n, 0) for n in names if after.get(n, 0) != before.get(n, 0)
    }


def test_it_answers_a_warm_call_with_no_sql_and_one_redis_round_trip(redis_server, monkeypatch):
    # A refresh interval longer than the test: the switch is not re-read inside a count (in a
    # served app the background refresher does that, off every request).
    with override_settings(SWITCH_REFRESH_SECONDS=3600):
        turn_caching(True)
        org = make_org()
        known_caller(org)
        initiate()  # the call is recorded: the requests below are repeats and write nothing
        writer.drain()
        gate.flush(actor="test", reason="start cold", source="system")
        responses = []
        with writer_held(), sql_in_every_thread(monkeypatch) as cold_queries:
            cold = commands_during(redis_server, lambda: responses.append(initiate()))
        # The counter sees the worker thread's queries: the cold context's five.
        assert len(cold_queries) == 5
        assert all(thread != threading.current_thread().name for thread, _ in cold_queries)
        # One read (entry, marker, scope tokens), the missing tokens created (two of them),
        # one guarded store (marker and tokens compared); the scripts' own commands count.
        assert cold == {"mget": 1, "evalsha": 2, "get": 5, "set": 3}
        with writer_held(), sql_in_every_thread(monkeypatch) as warm_queries:
            warm = commands_during(redis_server, lambda: responses.append(initiate()))
        assert warm_queries == []
        assert warm == {"mget": 1}
    cold_answer, warm_answer = (r.json() for r in responses)
    assert without_clock(warm_answer["dynamic_variables"]) == without_clock(
        cold_answer["dynamic_variables"]
    )
    assert Conversation.objects.filter(call_sid=CALL_SID).count() == 1


# --- every cache mode, the same answer ----------------------------------------------------


def test_it_gives_the_same_variables_in_every_cache_mode(shared_redis, frozen_now):
    org = make_org()
    known_caller(org)
    initiate()  # the call is recorded once; the initiations below are repeats of it
    writer.drain()
    before = fallback_count()
    answers = {}
    for mode in MODES:
        with cache_mode(mode, shared_redis):
            answers[mode] = []
            for _ in range(2):  # a miss, then (caching on) a hit
                response = initiate()
                writer.drain()
                assert response.status_code == 200
                answers[mode].append(without_clock(response.json()["dynamic_variables"]))
        gate.reset()
    # The call in progress (initiated, recorded above) is not a previous conversation.
    expected = without_clock(known_caller_variables(org))
    assert answers == {mode: [expected, expected] for mode in MODES}
    assert fallback_count() == before
    assert Conversation.objects.count() == 2


# --- failures behind the answer: still 200, every variable --------------------------------


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (OperationalError("the database is unreachable"), "OperationalError"),
        (RuntimeError("a bug in the loader"), "RuntimeError"),
    ],
)
def test_it_answers_with_defaults_when_the_context_cannot_be_loaded(
    monkeypatch, caplog, error, logged
):
    make_org()

    def broken(org_number, phone):
        raise error

    monkeypatch.setattr(reads, "load_call_context", broken)
    before = fallback_count()
    response = initiate()
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body["dynamic_variables"]) == set(variables.DEFAULTS)
    assert without_clock(body["dynamic_variables"]) == without_clock(
        {**variables.DEFAULTS, "customer_phone": CALLER}
    )
    assert body["dynamic_variables"]["current_day"] in variables.DAY_NAMES
    assert body == answer(body["dynamic_variables"])
    assert fallback_count() == before + 1
    assert f"initiation answered with defaults: {logged}: {error}" in caplog.messages
    assert_nothing_stored()


def test_it_answers_with_defaults_within_the_time_budget(monkeypatch, caplog):
    make_org()
    finished = threading.Event()
    load = reads.load_call_context

    def slow(org_number, phone):
        try:
            time.sleep(1.0)
            return load(org_number, phone)
        finally:
            finished.set()

    monkeypatch.setattr(reads, "load_call_context", slow)
    before = fallback_count()

    # Through the ASGI handler on a running loop, as daphne serves it. (The sync test Client
    # runs each async view in a fresh event loop that, on closing, waits for the abandoned
    # worker thread, so it cannot show when the answer was ready.)
    async def post():
        started = time.perf_counter()
        response = await AsyncClient(enforce_csrf_checks=True).post(
            PATH,
            json.dumps(fixture_payload()),
            content_type="application/json",
            headers={"X-Webhook-Secret": SECRET},
        )
        return response, time.perf_counter() - started

    with override_settings(INITIATION_TIME_BUDGET=0.2):
        response, elapsed = asyncio.run(post())
    assert elapsed < 1.0  # the time budget is this contract's subject
    assert response.status_code == 200
    dynamic = response.json()["dynamic_variables"]
    assert set(dynamic) == set(variables.DEFAULTS)
    assert without_clock(dynamic) == without_clock({**variables.DEFAULTS, "customer_phone": CALLER})
    assert fallback_count() == before + 1
    assert any(
        m.startswith("initiation answered with defaults: TimeoutError") for m in caplog.messages
    )
    assert finished.wait(5)
    writer.drain()


# --- bad input: a clear 4xx, nothing stored -----------------------------------------------


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_it_allows_only_post(method):
    make_org()
    client = Client(enforce_csrf_checks=True)
    response = getattr(client, method)(PATH, headers={"X-Webhook-Secret": SECRET})
    assert_rejected(response, 405, f"{method.upper()} is not allowed here; use POST")
    assert response["Allow"] == "POST"
    assert_nothing_stored()


def test_it_refuses_a_missing_secret():
    make_org()
    assert_rejected(initiate(secret=None), 401, "missing X-Webhook-Secret header")
    assert_nothing_stored()


def test_it_refuses_a_wrong_secret():
    make_org()
    assert_rejected(initiate(secret="not-the-secret"), 401, "wrong X-Webhook-Secret header")
    assert_rejected(initiate(secret=SECRET + "x"), 401, "wrong X-Webhook-Secret header")
    assert_nothing_stored()


def test_it_reads_the_secret_from_the_configured_header():
    make_org()
    with override_settings(ELEVENLABS_INITIATION_HEADER="X-Elevenlabs-Secret"):
        refused = initiate()
        accepted = initiate(header="X-Elevenlabs-Secret")
    assert_rejected(refused, 401, "missing X-Elevenlabs-Secret header")
    assert accepted.status_code == 200
    writer.drain()
    assert Conversation.objects.count() == 1


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_it_refuses_a_body_that_is_not_json(content_type):
    make_org()
    response = initiate(content_type=content_type)
    assert_rejected(response, 415, f"content type must be application/json, not {content_type}")
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"caller_id": "+15551230001", ', "body is not valid JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b'["+15551230001"]', "body must be a JSON object"),
    ],
)
def test_it_refuses_malformed_json(body, error):
    make_org()
    assert_rejected(initiate(body=body), 400, error)
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"agent_id": "agent_1"}, "missing required fields: caller_id, called_number"),
        ({"caller_id": CALLER, "call_sid": CALL_SID}, "missing required field: called_number"),
        ({"caller_id": "", "called_number": ORG_NUMBER}, "missing required field: caller_id"),
    ],
)
def test_it_names_the_missing_fields(payload, error):
    make_org()
    assert_rejected(initiate(payload), 400, error)
    assert_nothing_stored()


def test_it_refuses_a_body_over_the_size_limit():
    make_org()
    with override_settings(WEBHOOK_MAX_BODY_BYTES=64):
        response = initiate()
    assert_rejected(response, 413, "body over the 64-byte limit")
    assert_nothing_stored()


def test_it_answers_503_when_no_secret_is_configured():
    make_org()
    with override_settings(ELEVENLABS_INITIATION_SECRET=""):
        response = initiate()
    assert_rejected(response, 503, "ELEVENLABS_INITIATION_SECRET is not configured")
    assert_nothing_stored()


def test_it_accepts_an_unauthenticated_call_when_verification_is_off(frozen_now):
    org = make_org()
    with override_settings(ELEVENLABS_INITIATION_SECRET="", WEBHOOK_VERIFY=False):
        response = initiate(secret=None)
    assert response.status_code == 200
    assert response.json()["dynamic_variables"]["organization_id"] == str(org.id)
    writer.drain()
    assert Conversation.objects.get().call_sid == CALL_SID
