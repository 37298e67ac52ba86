"""The only writer of bench data: every row the scenarios read, written straight to the
(throwaway) bench database.

- `caller_with_history`: one organization and one caller with a summarized history (the gate's
  per-call timings), through the ORM.
- `population`: a realistic population for the load scenarios, with COPY: three organizations
  (a big one and two small ones), their leads, about one conversation per lead and about three
  messages per conversation. Row ids are assigned here and the sequences moved past them
  afterwards; the random generator is seeded, so every run writes the same rows (apart from
  timestamps, relative to now). `ranked_population` also orders the big organization's leads by
  popularity for the mixed-load scenarios.
- `add_growth_leads`: the growth scenario's leads, added in steps (10,000, then up to
  1,000,000) to the population's organizations, every tenth with a little history (one
  conversation, two messages).
"""

import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from django.utils import timezone

from leads.models import Conversation, Lead, Message, Organization, PhoneNumber

MAIN_NUMBER = "+15550100000"
CALLER = "+15550123456"
HISTORY_EVERY = 10  # every tenth growth lead has 1 conversation + 2 messages
LEAD_COLUMNS = (
    "id, organization_id, phone, name, status, interest, qualification, sentiment,"
    " last_contact_at, created_at, updated_at"
)
CONVERSATION_COLUMNS = (
    "id, lead_id, channel, provider_id, status, started_at, ended_at, duration_seconds,"
    " title, summary, classification, analysis"
)
MESSAGE_COLUMNS = (
    "id, conversation_id, lead_id, role, body, provider_message_id, delivery_status,"
    " delivery_error, created_at"
)
HOURS = {day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
HOURS["sat"] = [["10:00", "16:00"]]
FIRST = ["Alex", "Sam", "Jordan", "Casey", "Riley", "Morgan", "Taylor", "Jamie", "Robin", "Drew"]
LAST = ["Smith", "Garcia", "Chen", "Okafor", "Novak", "Silva", "Kowalski", "Haddad", "Ito"]
BIKES = ["e-bike", "road bike", "gravel bike", "cargo bike", "kids' bike", "mountain bike"]
STATUSES = ["new"] * 6 + ["contacted"] * 6 + ["qualified"] * 4 + ["hot", "customer", "lost"]
CONVERSATIONS_PER_LEAD = [0, 1, 1, 1, 2]  # 1.0 on average
LINES = [
    "Hi, do you have the {bike} in stock in a medium frame?",
    "We do: two in medium, and one more arriving on Thursday.",
    "What would a test ride on the {bike} cost me?",
    "Test rides are free; bring an ID and we will set the saddle for you.",
    "Can I pay in instalments for the {bike}?",
    "Yes, over 6 or 12 months; I can send you the details by text.",
]


@dataclass
class Population:
    org_number: str
    # Phone numbers of the big organization's leads that have a message history, shuffled.
    callers: list[str]
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Lead:
    id: int
    org_id: int
    phone: str
    bike: str
    first_contact: datetime
    # (conversation id, number of messages) for each of its conversations.
    conversations: list[tuple[int, int]]


def population(url: str, main_leads: int = 100_000, small_leads: int = 5_000) -> Population:
    """Write the population into the database at `url` (PostgreSQL) and return its summary."""
    started = time.perf_counter()
    rng = random.Random(7)
    with psycopg.connect(url) as conn:
        orgs = _organizations(conn)
        sizes = [main_leads, small_leads, small_leads]
        leads = _plan(rng, list(zip(orgs, sizes, strict=True)))
        rows = {"organizations": len(orgs), "leads": _copy_leads(conn, leads, rng)}
        rows["conversations"] = _copy_conversations(conn, leads)
        rows["messages"] = _copy_messages(conn, leads)
        _finish(conn)
    callers = [lead.phone for lead in leads if lead.org_id == orgs[0] and lead.conversations]
    rng.shuffle(callers)
    return Population(MAIN_NUMBER, callers, rows, round(time.perf_counter() - started, 1))


def _organizations(conn: psycopg.Connection) -> list[int]:
    specs = [
        ("Bench Cycles", "1 Spoke Street", [MAIN_NUMBER, "+15550100001"]),
        ("Bench Bikes North", "2 Chain Road", ["+15550200000"]),
        ("Bench Bikes South", "3 Pedal Lane", ["+15550300000"]),
    ]
    org_table, number_table = Organization._meta.db_table, PhoneNumber._meta.db_table
    ids = []
    for name, address, numbers in specs:
        (org_id,) = conn.execute(
            f"INSERT INTO {org_table} (name, address, timezone, business_hours, sms_auto_reply,"
            " created_at) VALUES (%s, %s, 'America/New_York', %s, '', now()) RETURNING id",
            (name, address, json.dumps(HOURS)),
        ).fetchone()
        for e164 in numbers:
            conn.execute(
                f"INSERT INTO {number_table} (organization_id, e164, label) VALUES (%s, %s, '')",
                (org_id, e164),
            )
        ids.append(org_id)
    return ids


def _plan(rng: random.Random, orgs: list[tuple[int, int]]) -> list[_Lead]:
    """Every lead's id, phone and conversations, so the three COPYs agree with each other."""
    now, leads, conversation_id = timezone.now(), [], 0
    for org_index, (org_id, size) in enumerate(orgs):
        for n in range(size):
            conversations = []
            for _ in range(rng.choice(CONVERSATIONS_PER_LEAD)):
                conversation_id += 1
                conversations.append((conversation_id, rng.randint(1, 5)))
            first_contact = now - timedelta(days=rng.uniform(10, 400))
            phone = f"+1555{org_index + 2}{n:06d}"
            leads.append(
                _Lead(
                    len(leads) + 1, org_id, phone, rng.choice(BIKES), first_contact, conversations
                )
            )
    return leads


def _copy_leads(conn: psycopg.Connection, leads: list[_Lead], rng: random.Random) -> int:
    with conn.cursor().copy(f"COPY {Lead._meta.db_table} ({LEAD_COLUMNS}) FROM STDIN") as copy:
        for lead in leads:
            named = rng.random() < 0.7
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}" if named else ""
            last = _last_contact(lead)
            interest = json.dumps(
                {"bike_interest": lead.bike, "budget": rng.choice(["<1k", "1-3k"])}
            )
            qualification = json.dumps({"owner": rng.random() < 0.5}) if named else "{}"
            sentiment = rng.choice(["positive", "neutral", "negative", ""])
            row = (lead.id, lead.org_id, lead.phone, name, rng.choice(STATUSES), interest)
            copy.write_row((*row, qualification, sentiment, last, lead.first_contact, last))
    return len(leads)


def _last_contact(lead: _Lead) -> datetime:
    return lead.first_contact + timedelta(days=3 * len(lead.conversations))


def _copy_conversations(conn: psycopg.Connection, leads: list[_Lead]) -> int:
    count = 0
    table = Conversation._meta.db_table
    with conn.cursor().copy(f"COPY {table} ({CONVERSATION_COLUMNS}) FROM STDIN") as copy:
        for lead in leads:
            for n, (conversation_id, _) in enumerate(lead.conversations):
                started = lead.first_contact + timedelta(days=3 * n)
                voice = conversation_id % 2 == 0
                provider_id = f"conv_bench_{conversation_id}" if voice else None
                summary = f"Asked about the {lead.bike}: stock, test ride and instalments."
                copy.write_row(
                    (conversation_id, lead.id, "voice" if voice else "sms", provider_id)
                    + ("completed", started, started + timedelta(minutes=4), 240)
                    + (f"{lead.bike.capitalize()} enquiry", summary, "", "{}")
                )
                count += 1
    return count


def _copy_messages(conn: psycopg.Connection, leads: list[_Lead]) -> int:
    message_id = 0
    with conn.cursor().copy(
        f"COPY {Message._meta.db_table} ({MESSAGE_COLUMNS}) FROM STDIN"
    ) as copy:
        for lead in leads:
            for n, (conversation_id, messages) in enumerate(lead.conversations):
                started = lead.first_contact + timedelta(days=3 * n)
                for i in range(messages):
                    message_id += 1
                    role = "customer" if i % 2 == 0 else "agent"
                    body = LINES[i % len(LINES)].format(bike=lead.bike)
                    at = started + timedelta(seconds=30 * i)
                    copy.write_row(
                        (message_id, conversation_id, lead.id, role, body, None, "", "", at)
                    )
    return message_id


def _finish(conn: psycopg.Connection) -> None:
    """Move each sequence past the ids written, and give the planner fresh statistics."""
    for model in (Organization, PhoneNumber, Lead, Conversation, Message):
        table = model._meta.db_table
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT coalesce(max(id), 1) FROM {table}))"
        )
    conn.commit()
    conn.autocommit = True
    for model in (Lead, Conversation, Message):
        conn.execute(f"ANALYZE {model._meta.db_table}")


def ranked_population(main_leads: int, small_leads: int) -> tuple[Population, list[str]]:
    """The population, and every lead of the big organization in a fixed random order (the
    order is the callers' popularity rank)."""
    people = population(os.environ["DATABASE_URL"], main_leads, small_leads)
    phones = list(
        Lead.objects.filter(organization__numbers__e164=people.org_number)
        .order_by("id")
        .values_list("phone", flat=True)
    )
    random.Random(11).shuffle(phones)
    return people, phones


# --- the growth scenario's leads ------------------------------------------------------------


def growth_phone(n: int) -> str:
    return f"+1556{n:07d}"


def growth_organization(url: str) -> int:
    """The bench organizations (the population's three); returns the main one's id."""
    with psycopg.connect(url) as conn:
        return _organizations(conn)[0]


def add_growth_leads(url: str, org_id: int, start: int, stop: int) -> dict:
    """Leads number start..stop-1, their history, fresh statistics. Ids continue past the
    tables' current maxima (the measured requests in between add conversations)."""
    started = time.perf_counter()
    now = timezone.now()
    history = range(start + (-start % HISTORY_EVERY), stop, HISTORY_EVERY)
    with psycopg.connect(url) as conn:
        lead_base, conversation_base, message_base = (
            _max_id(conn, model) for model in (Lead, Conversation, Message)
        )
        with conn.cursor().copy(f"COPY {Lead._meta.db_table} ({LEAD_COLUMNS}) FROM STDIN") as cp:
            for n in range(start, stop):
                at = now - timedelta(days=10 + n % 300)
                bike = BIKES[n % len(BIKES)]
                interest = json.dumps({"bike_interest": bike})
                status = STATUSES[n % len(STATUSES)]
                row = (
                    lead_base + n - start + 1,
                    org_id,
                    growth_phone(n),
                    f"Lead {n}",
                    status,
                    interest,
                    "{}",
                    "",
                )
                cp.write_row((*row, at, at, at))
        table = Conversation._meta.db_table
        with conn.cursor().copy(f"COPY {table} ({CONVERSATION_COLUMNS}) FROM STDIN") as cp:
            for n in history:
                at = now - timedelta(days=5 + n % 300)
                bike = BIKES[n % len(BIKES)]
                lead_id = lead_base + n - start + 1
                cp.write_row(
                    (
                        conversation_base + n + 1,
                        lead_id,
                        "sms",
                        None,
                        "completed",
                        at,
                        at + timedelta(minutes=4),
                        240,
                    )
                    + (f"{bike} enquiry", f"Asked about the {bike}.", "", "{}")
                )
        with conn.cursor().copy(
            f"COPY {Message._meta.db_table} ({MESSAGE_COLUMNS}) FROM STDIN"
        ) as cp:
            for n in history:
                at = now - timedelta(days=5 + n % 300)
                bike = BIKES[n % len(BIKES)]
                for i in range(2):
                    body = LINES[i].format(bike=bike)
                    role = ("customer", "agent")[i]
                    at_i = at + timedelta(seconds=30 * i)
                    ids = (message_base + 2 * n + i + 1, conversation_base + n + 1)
                    lead_id = lead_base + n - start + 1
                    cp.write_row((*ids, lead_id, role, body, None, "", "", at_i))
        _finish(conn)
    return {
        "leads": stop - start,
        "conversations": len(history),
        "messages": 2 * len(history),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _max_id(conn: psycopg.Connection, model) -> int:
    (value,) = conn.execute(f"SELECT coalesce(max(id), 0) FROM {model._meta.db_table}").fetchone()
    return value


# --- one caller with a history (the gate) --------------------------------------------------


@dataclass(frozen=True)
class Caller:
    org_number: str
    phone: str
    lead_id: int


def caller_with_history(conversations: int = 5, messages_each: int = 4) -> Caller:
    """An organization, and a caller with `conversations` past conversations (summarized) of
    `messages_each` messages each: 20 messages by default."""
    org = Organization.objects.create(
        name="Bench Plumbing",
        address="1 Bench Street",
        timezone="America/New_York",
        business_hours={day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
    )
    PhoneNumber.objects.create(organization=org, e164=MAIN_NUMBER, label="main")
    start = timezone.now() - timedelta(days=conversations)
    lead = Lead.objects.create(
        organization=org,
        phone=CALLER,
        name="Casey Caller",
        status=Lead.Status.QUALIFIED,
        interest={"service": "boiler repair", "budget": "500-1000"},
        qualification={"owner": True, "timeline": "this week"},
        last_contact_at=start + timedelta(days=conversations - 1),
    )
    for n in range(conversations):
        _conversation(lead, n, start + timedelta(days=n), messages_each)
    return Caller(MAIN_NUMBER, CALLER, lead.id)


def _conversation(lead: Lead, n: int, started_at, messages: int) -> None:
    conversation = Conversation.objects.create(
        lead=lead,
        channel=Conversation.Channel.VOICE if n % 2 else Conversation.Channel.SMS,
        provider_id=f"bench-conversation-{n}",
        status=Conversation.Status.COMPLETED,
        started_at=started_at,
        ended_at=started_at + timedelta(minutes=4),
        duration_seconds=240,
        title=f"Boiler follow-up {n}",
        summary=f"Conversation {n}: the caller asked about a boiler repair and a quote.",
    )
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            lead=lead,
            role=Message.Role.CUSTOMER if i % 2 == 0 else Message.Role.AGENT,
            body=f"Message {i} of conversation {n}: when can a technician come by?",
            created_at=started_at + timedelta(seconds=30 * i),
        )
        for i in range(messages)
    )
