"""The growth scenario's population, written with COPY into the bench database: one
organization (the main number; population's two small ones too) whose leads are added in steps
(10,000, then up to 1,000,000), every tenth lead with a little history (one conversation, two
messages)."""

import json
import time
from datetime import timedelta

import psycopg
from django.utils import timezone

from bench import population
from leads.models import Conversation, Lead, Message

HISTORY_EVERY = 10  # every tenth lead has 1 conversation + 2 messages
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


def phone(n: int) -> str:
    return f"+1556{n:07d}"


def organization(url: str) -> int:
    """The bench organizations (population's); returns the main one's id."""
    with psycopg.connect(url) as conn:
        return population._organizations(conn)[0]


def add_leads(url: str, org_id: int, start: int, stop: int) -> dict:
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
                bike = population.BIKES[n % len(population.BIKES)]
                interest = json.dumps({"bike_interest": bike})
                status = population.STATUSES[n % len(population.STATUSES)]
                row = (
                    lead_base + n - start + 1,
                    org_id,
                    phone(n),
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
                bike = population.BIKES[n % len(population.BIKES)]
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
                bike = population.BIKES[n % len(population.BIKES)]
                for i in range(2):
                    body = population.LINES[i].format(bike=bike)
                    role = ("customer", "agent")[i]
                    at_i = at + timedelta(seconds=30 * i)
                    ids = (message_base + 2 * n + i + 1, conversation_base + n + 1)
                    lead_id = lead_base + n - start + 1
                    cp.write_row((*ids, lead_id, role, body, None, "", "", at_i))
        population._finish(conn)
    return {
        "leads": stop - start,
        "conversations": len(history),
        "messages": 2 * len(history),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _max_id(conn: psycopg.Connection, model) -> int:
    (value,) = conn.execute(f"SELECT coalesce(max(id), 0) FROM {model._meta.db_table}").fetchone()
    return value
