"""A realistic population for load scenarios, written straight into the (throwaway) bench
database with COPY: three organizations (a big one and two small ones), their leads, about one
conversation per lead and about three messages per conversation.

Row ids are assigned here and the sequences moved past them afterwards. The random generator is
seeded, so every run writes the same rows (apart from timestamps, relative to now).
"""

import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from django.utils import timezone

from leads.models import Conversation, Lead, Message, Organization, PhoneNumber

MAIN_NUMBER = "+15550100000"
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


def seed(url: str, main_leads: int = 100_000, small_leads: int = 5_000) -> Population:
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
    columns = (
        "id, organization_id, phone, name, status, interest, qualification, sentiment,"
        " last_contact_at, created_at, updated_at"
    )
    with conn.cursor().copy(f"COPY {Lead._meta.db_table} ({columns}) FROM STDIN") as copy:
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
    columns = (
        "id, lead_id, channel, provider_id, status, started_at, ended_at, duration_seconds,"
        " title, summary, classification, analysis"
    )
    count = 0
    with conn.cursor().copy(f"COPY {Conversation._meta.db_table} ({columns}) FROM STDIN") as copy:
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
    columns = (
        "id, conversation_id, lead_id, role, body, provider_message_id, delivery_status,"
        " delivery_error, created_at"
    )
    message_id = 0
    with conn.cursor().copy(f"COPY {Message._meta.db_table} ({columns}) FROM STDIN") as copy:
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
