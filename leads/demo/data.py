"""The demo's made-up world, generated the same way every time: the organization, its leads
(by index: phone, name, interest, history) and what customers and the agent say. `demo seed`
writes it; `demo traffic` calls and texts as the same people without reading the database
(the app it drives may run on another one)."""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

ORGANIZATION = "Demo Bikes"
# 555-01xx numbers are reserved for fiction: no real phone is ever called or texted.
NUMBER = "+15555550100"
ADDRESS = "12 Harbour Road, Portland, OR 97209"
TIMEZONE = "America/Los_Angeles"
BUSINESS_HOURS = {
    "mon": [["09:00", "18:00"]],
    "tue": [["09:00", "18:00"]],
    "wed": [["09:00", "18:00"]],
    "thu": [["09:00", "20:00"]],
    "fri": [["09:00", "18:00"]],
    "sat": [["10:00", "16:00"]],
    "sun": [],
}
SMS_AUTO_REPLY = "Thanks for texting Demo Bikes! Someone from the shop will answer shortly."
AGENT_ID = "agent_demo_bikes"
MAX_LEADS = 10_000

FIRST_NAMES = [
    "Ava", "Ben", "Chloe", "Diego", "Elena", "Farah", "Gus", "Hana", "Ivan", "Jade",
    "Kofi", "Lena", "Marco", "Nina", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara",
]  # fmt: skip
LAST_NAMES = [
    "Adams", "Baker", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ito",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Rossi", "Silva",
]  # fmt: skip
BIKES = [
    "City E2 e-bike", "Trail 29 hardtail", "Cargo Long 2", "Gravel GX", "Folding Mini 16",
    "Road Aero 105", "Kids 20 inch", "Cruiser Classic",
]  # fmt: skip
# (status, weight): most demo leads have been in touch, a few bought, a few were lost.
STATUSES = [
    ("new", 15), ("contacted", 35), ("qualified", 20), ("hot", 15), ("customer", 10), ("lost", 5),
]  # fmt: skip
SENTIMENTS = ["positive", "positive", "neutral", "neutral", "negative"]

CUSTOMER_LINES = [
    "Hi, is the {bike} still in stock?",
    "What does the {bike} cost with the bigger battery?",
    "Can I book a test ride on the {bike} this weekend?",
    "Do you take trade-ins? I have an old road bike.",
    "My budget is around {budget} dollars.",
    "Is there financing on the {bike}?",
    "What time do you close on Saturday?",
    "Could someone check my brakes next week?",
]
AGENT_LINES = [
    "Yes, we have the {bike} in two sizes. Would you like to try one?",
    "The {bike} is {budget} dollars; the larger battery adds about 300.",
    "Saturday at 10 works. I have booked you in, {name}.",
    "We do take trade-ins; bring it by and we will price it on the spot.",
    "We offer 12 months at zero percent on bikes over 1000 dollars.",
    "We are open 10 to 4 on Saturdays.",
]
CUSTOMER_TEXTS = [
    "Hi! Do you have the {bike} in medium?",
    "Running 10 min late for my test ride, sorry!",
    "Is my bike ready for pickup?",
    "What are your hours today?",
    "Thanks, see you Saturday.",
    "Can I reserve the {bike} until Friday?",
]


@dataclass(frozen=True)
class ConversationPlan:
    channel: str
    started_at: datetime
    lines: list[tuple[str, str, datetime]]  # (role, body, created_at)
    title: str
    summary: str


@dataclass(frozen=True)
class LeadPlan:
    phone: str
    name: str
    status: str
    bike: str
    budget: int
    sentiment: str
    conversations: list[ConversationPlan]


def lead_phone(index: int) -> str:
    if not 0 <= index < MAX_LEADS:
        raise ValueError(f"demo leads are numbered 0 to {MAX_LEADS - 1}")
    return f"+1555020{index:04d}"


def new_caller_phone(rng: random.Random) -> str:
    """Someone who never called before (outside the seeded leads' block)."""
    return f"+1555030{rng.randint(0, MAX_LEADS - 1):04d}"


def lead_plan(index: int, now: datetime) -> LeadPlan:
    rng = random.Random(f"demo-lead-{index}")
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    statuses, weights = zip(*STATUSES, strict=True)
    status = rng.choices(statuses, weights)[0]
    bike, budget = rng.choice(BIKES), rng.choice([800, 1200, 1500, 2000, 3500])
    conversations = []
    last_seen = now - timedelta(days=rng.uniform(0.1, 60))
    for _ in range(rng.randint(1, 4)):
        conversations.append(_conversation(rng, last_seen, name, bike, budget))
        last_seen -= timedelta(days=rng.uniform(1, 20))
    conversations.reverse()  # oldest first, as they happened
    return LeadPlan(
        lead_phone(index),
        name,
        status,
        bike,
        budget,
        rng.choice(SENTIMENTS),
        conversations,
    )


def _conversation(rng, started_at, name, bike, budget) -> ConversationPlan:
    channel = rng.choice(["voice", "voice", "sms"])
    lines = []
    at = started_at
    for turn in range(rng.randint(2, 6)):
        role = "customer" if turn % 2 == 0 else "agent"
        pool = _lines_for(role, channel)
        lines.append((role, say(rng.choice(pool), name, bike, budget), at))
        at += timedelta(seconds=rng.randint(5, 40) if channel == "voice" else rng.randint(60, 900))
    title = f"{bike}: {rng.choice(['test ride', 'price question', 'stock check', 'service'])}"
    summary = f"{name.split()[0]} asked about the {bike} (budget about {budget} dollars)."
    return ConversationPlan(channel, started_at, lines, title, summary)


def _lines_for(role: str, channel: str) -> list[str]:
    if role == "agent":
        return AGENT_LINES
    return CUSTOMER_LINES if channel == "voice" else CUSTOMER_TEXTS


def say(line: str, name: str, bike: str, budget: int) -> str:
    return line.format(name=name.split()[0], bike=bike, budget=budget)
