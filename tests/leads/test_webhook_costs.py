"""Exact costs of each webhook's request path: the SQL statements the request runs
(CaptureQueriesContext, BEGIN, COMMIT and savepoints included) and the Redis commands it sends
(the server's own INFO commandstats on a private redis-server), for a known caller, a new one
where that differs, caching on and off. What the answer leaves to the background writer (the
caller's re-warm, the initiation's record) is held until the request is counted, then run."""

import json

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from leads import services
from leads.models import Conversation, Lead, Message, WebhookEvent
from leads.services import calls
from leads.webhooks.deferred import writer
from monitoring.metrics.recorder import recorder
from tests.conftest import turn_caching
from tests.factories import CALLER, ORG_NUMBER, make_org
from tests.leads.post_call_support import (
    CALL_SID,
    CONVERSATION_ID,
    INITIATION_PATH,
    INITIATION_SECRET,
    SECRET,
    deliver,
    recorded,
)
from tests.leads.test_costs import commands_during, round_trips
from tests.leads.twilio_support import (
    OUTBOUND_SID,
    SMS_PATH,
    STATUS_PATH,
    outbound_text,
    post_twilio,
    sms,
    status,
    twilio_account,
)

pytestmark = pytest.mark.django_db(transaction=True)

NEW_CALLER = "+15557770001"


@pytest.fixture
def held(monkeypatch):
    """The background writer's queue, held: what a request hands it runs only on release()."""
    jobs: list[tuple] = []
    enqueue = writer._queue
    monkeypatch.setattr(writer, "_queue", lambda job, args: jobs.append((job, args)))

    def release() -> int:
        for job, args in jobs:
            enqueue(job, args)
        count = len(jobs)
        jobs.clear()
        assert writer.drain()
        return count

    return release


@pytest.fixture
def org(redis_server):
    """A known caller with a text thread in progress and an outbound text, their context warm;
    the gate's scripts loaded; the switch copy never re-read inside a count."""
    settings = {
        "SWITCH_REFRESH_SECONDS": 3600,
        "ELEVENLABS_WEBHOOK_SECRET": SECRET,
        "ELEVENLABS_INITIATION_SECRET": INITIATION_SECRET,
        "ELEVENLABS_INITIATION_HEADER": "X-Webhook-Secret",
        "WEBHOOK_MAX_AGE": 30 * 60,
        "WEBHOOK_MAX_CLOCK_SKEW": 5 * 60,
    }
    with override_settings(**settings), twilio_account():
        turn_caching(True)
        org = make_org()
        outbound_text(org)  # the caller's lead and a text thread in progress
        warm_up()
        yield org
        writer.drain()


def warm_up() -> None:
    services.call_context(ORG_NUMBER, CALLER)
    services.find_or_create_lead(services.organization_for_number(ORG_NUMBER)["id"], CALLER)
    services.call_context(ORG_NUMBER, "+15559990000")
    writer.drain()


def caching(on: bool) -> None:
    turn_caching(on)
    if on:
        warm_up()


def cost(redis_server, request) -> tuple[int, int, dict[str, int]]:
    """(SQL statements on the request's thread, BEGIN/COMMIT/savepoints included; statements
    the app's metrics count for the request, in any thread, BEGIN and COMMIT not included;
    Redis round trips by command) of one request, asserted answered 200."""
    responses = []
    recorder.take()
    with CaptureQueriesContext(connection) as queries:
        commands = commands_during(redis_server, lambda: responses.append(request()))
    assert responses[0].status_code == 200, responses[0].content
    (group,) = recorder.take()[2].values()
    return len(queries), group["sql"], round_trips(commands)


def text(caller: str = CALLER, sid: str = "SM" + "7" * 32):
    return lambda: post_twilio(SMS_PATH, sms(From=caller, MessageSid=sid))


def initiation(caller: str = CALLER, sid: str = "CA" + "7" * 32):
    payload = {"caller_id": caller, "called_number": ORG_NUMBER, "call_sid": sid}
    return lambda: Client().post(
        INITIATION_PATH,
        json.dumps(payload),
        content_type="application/json",
        headers={"X-Webhook-Secret": INITIATION_SECRET},
    )


def post_call(caller: str = CALLER):
    envelope = recorded("post_call_transcription.json")
    envelope["data"]["metadata"]["phone_call"]["external_number"] = caller
    return lambda: deliver(envelope)


def assert_context_warm_again(release, django_assert_num_queries) -> None:
    """The re-warm ran once released, off the request: the next read runs no SQL."""
    assert release() == 1
    with django_assert_num_queries(0):
        services.call_context(ORG_NUMBER, CALLER)


# --- Twilio: inbound text ---------------------------------------------------------------------

# BEGIN; the delivery row (INSERT ... ON CONFLICT DO NOTHING RETURNING id); the thread with its
# lead, last message time and "stored already?" (locked); the message; the lead's last
# contact; COMMIT; the switch's generation for the invalidation.
KNOWN_TEXT = 7
# Without the cache: the organization and the lead read first.
KNOWN_TEXT_UNCACHED = KNOWN_TEXT + 2
# A new caller: the lead looked up (a miss) and upserted; no thread yet, so the "stored
# already?" check on its own, the lead locked, the thread inserted.
NEW_TEXT = KNOWN_TEXT + 5


def test_it_stores_a_known_callers_text_in_seven_statements(
    org, redis_server, held, django_assert_num_queries
):
    # Redis: the organization and the lead lookups (hits), the invalidation (one script).
    assert cost(redis_server, text()) == (KNOWN_TEXT, KNOWN_TEXT - 2, {"mget": 2, "evalsha": 1})
    assert Message.objects.filter(provider_message_id="SM" + "7" * 32).exists()
    assert_context_warm_again(held, django_assert_num_queries)


def test_it_stores_a_new_callers_text_with_the_lead_upserted(org, redis_server, held):
    # Redis: the lookups (the lead a miss: its scope token created, and "no lead" stored once
    # the transaction commits, guarded), the invalidation.
    assert cost(redis_server, text(NEW_CALLER)) == (
        NEW_TEXT,
        NEW_TEXT - 2,
        {"mget": 2, "evalsha": 3},
    )
    assert Lead.objects.filter(phone=NEW_CALLER).count() == 1
    assert held() == 1


def test_it_stores_a_text_with_caching_off_with_the_reads_from_the_database(
    org, redis_server, held
):
    caching(False)
    # Redis: only the invalidation (sent while switched off: see CacheGate.invalidate).
    assert cost(redis_server, text()) == (
        KNOWN_TEXT_UNCACHED,
        KNOWN_TEXT_UNCACHED - 2,
        {"evalsha": 1},
    )


def test_it_answers_a_text_delivered_again_with_the_first_statement_its_only_write(
    org, redis_server, held
):
    text()()
    held()
    # BEGIN; the insert, which finds the row; the row (locked); its duplicate counted; COMMIT.
    assert cost(redis_server, text()) == (5, 3, {})
    assert WebhookEvent.objects.get(idempotency_key="SM" + "7" * 32).duplicates == 1


# --- Twilio: status callback ------------------------------------------------------------------

# BEGIN; the delivery row; the message with its lead (locked); its status; COMMIT; the
# switch's generation.
STATUS = 6


@pytest.mark.parametrize("on", [True, False])
def test_it_applies_a_status_callback_in_six_statements(on, org, redis_server, held):
    caching(on)
    callback = lambda: post_twilio(STATUS_PATH, status("delivered"))  # noqa: E731
    assert cost(redis_server, callback) == (STATUS, STATUS - 2, {"evalsha": 1})
    assert Message.objects.get(provider_message_id=OUTBOUND_SID).delivery_status == "delivered"
    assert held() == 1


# --- ElevenLabs: post-call ------------------------------------------------------------------------

# BEGIN; the delivery row; the call and its lead (locked), found by the call SID; the turns
# (one INSERT ... ON CONFLICT DO NOTHING); the call; the lead; COMMIT; the switch's generation.
POST_CALL = 8
# No call opened at initiation: the customer's open call looked for, the lead locked, the call
# opened (in a savepoint: its initiation may be writing it at the same moment).
POST_CALL_UNOPENED = POST_CALL + 5


@pytest.mark.parametrize("on", [True, False])
def test_it_records_a_post_call_of_an_initiated_call_in_eight_statements(
    on, org, redis_server, held
):
    lead = Lead.objects.get(phone=CALLER)
    calls.open_call(org.id, CALLER, CALL_SID, lead.created_at, lead.id)
    caching(on)
    # Redis: the invalidation only (the call was found in the database, not the cache).
    assert cost(redis_server, post_call()) == (POST_CALL, POST_CALL - 2, {"evalsha": 1})
    assert Conversation.objects.get(call_sid=CALL_SID).provider_id == CONVERSATION_ID
    assert held() == 1


def test_it_records_a_post_call_with_no_initiation_by_opening_the_call(
    org, redis_server, held, django_assert_num_queries
):
    # Redis: the organization's lookup (a hit) and the invalidation.
    assert cost(redis_server, post_call()) == (
        POST_CALL_UNOPENED,
        POST_CALL_UNOPENED - 2,
        {"mget": 1, "evalsha": 1},
    )
    assert Conversation.objects.get(call_sid=CALL_SID).status == "completed"
    assert_context_warm_again(held, django_assert_num_queries)


def test_it_records_a_new_callers_post_call_with_the_lead_upserted(org, redis_server, held):
    # Two more: the lead's lookup finds none, so it is upserted, then read and locked.
    new = POST_CALL_UNOPENED + 2
    assert cost(redis_server, post_call(NEW_CALLER)) == (new, new - 2, {"mget": 1, "evalsha": 1})
    assert Lead.objects.get(phone=NEW_CALLER).name == "Dana Scully"


def test_it_stores_a_failing_delivery_with_its_error_after_one_rolled_back_try(
    org, redis_server, held
):
    unmatched = {"type": "post_call_transcription", "data": {"conversation_id": "conv-x"}}
    # BEGIN, the row, the call looked for (none, and no numbers to open one), ROLLBACK; then
    # the row inserted failed, with its error (BEGIN, INSERT, COMMIT). Nothing to invalidate.
    assert cost(redis_server, lambda: deliver(unmatched)) == (7, 3, {})
    event = WebhookEvent.objects.get(idempotency_key="post_call_transcription:conv-x")
    assert (event.status, event.attempts) == ("failed", 1)
    assert event.error.startswith("leads.services.calls.CallNotMatched: no conversation conv-x")
    assert held() == 0


# --- ElevenLabs: conversation initiation -------------------------------------------------------


def test_it_answers_a_known_callers_initiation_with_no_sql_and_one_redis_command(
    org, redis_server, held
):
    assert cost(redis_server, initiation()) == (0, 0, {"mget": 1})
    assert held() == 1  # the call's record, written after the answer


def test_it_answers_a_new_callers_initiation_from_two_queries(org, redis_server, held):
    # The context loaded in a worker thread (the organization, no lead: two queries), its
    # scope tokens created and the entry stored (guarded).
    assert cost(redis_server, initiation(NEW_CALLER)) == (0, 2, {"mget": 1, "evalsha": 2})
    assert held() == 1


def test_it_answers_an_initiation_with_caching_off_from_the_database(org, redis_server, held):
    caching(False)
    # The context's five queries (see test_costs.COLD_CONTEXT_QUERIES), in a worker thread;
    # nothing sent to Redis.
    assert cost(redis_server, initiation()) == (0, 5, {})
    assert held() == 1
