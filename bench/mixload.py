"""A mixed webhook load client, run in its own process: `python -m bench.mixload` reads its plan as
JSON on stdin, prints `{"started": <unix time>}` as it starts, writes one row per request to the
plan's `records_file` ([sent at, ms, kind, status, flags]) and prints one JSON line of results.

Requests: call initiations, and writes (a text via Twilio's SMS webhook, or an ElevenLabs
post-call transcription), each validly signed, for callers drawn from `callers` (Zipf with
exponent `zipf` over the list's order, or uniform when 0). A write's share is `write_share`,
split evenly. Writes for one caller never overlap (the next is turned into an initiation while
one is in flight), so "the last write acknowledged" is well defined per caller. After each
acknowledged (2xx) write, initiations for that caller are added `verify_after` seconds later.

Every initiation answer is checked for staleness: a write for caller X acknowledged before the
answer's request was sent must show in it. A text carries a unique marker `mk<n>` in its body,
which must be in `conversation_context` (the newest markers, n increasing); a post-call sets the
caller's name to `Bench Caller <n>` by data collection, which `customer_name` must show (or a
later one). The post-call's transcript is dated a day back, so its turns never push a newer text
out of the last messages the context holds.

Pace: `rate` requests per second, open loop (a request waits for a free one of `connections`
keep-alive connections; at most one second of backlog is kept), or closed loop when `rate` is 0.
Runs until `stop_file` exists or `max_seconds` pass.
"""

import asyncio
import bisect
import heapq
import itertools
import json
import os
import random
import re
import sys
import time
from urllib.parse import urlencode

from bench.loadgen import read_answer
from leads.webhooks.signatures import elevenlabs_signature, twilio_signature

INITIATION_PATH = "/webhooks/elevenlabs/conversation-initiation"
POST_CALL_PATH = "/webhooks/elevenlabs/post-call"
SMS_PATH = "/webhooks/twilio/sms"
KINDS = {"init": 0, "sms": 1, "post": 2}
# Record flags. CHECKED: an initiation answer for a caller with an acknowledged write before it.
FALLBACK, STALE_SMS, STALE_NAME, FIRST, VERIFY, CHECKED = 1, 2, 4, 8, 16, 32
MARKER = re.compile(r"\bmk(\d+)\b")
NAME = re.compile(r"^Bench Caller (\d+)$")
CONNECTION_ERRORS = (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


class Callers:
    """Draws caller indexes: Zipf over the list's order (rank 1 first), or uniform."""

    def __init__(self, count: int, exponent: float, rng: random.Random) -> None:
        weights = [(k + 1) ** -exponent for k in range(count)]
        self.cumulative = list(itertools.accumulate(weights))
        self.rng = rng

    def draw(self) -> int:
        point = self.rng.random() * self.cumulative[-1]
        return min(bisect.bisect_left(self.cumulative, point), len(self.cumulative) - 1)


class Source:
    """Hands out the next request: a due verification first, then a new one (paced)."""

    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.rng = random.Random(plan["seed"])
        self.callers = Callers(len(plan["callers"]), plan["zipf"], self.rng)
        self.interval = 1.0 / plan["rate"] if plan["rate"] else 0.0
        self.slot = time.monotonic()
        self.deadline = time.monotonic() + plan["max_seconds"]
        self.verifies: list[tuple[float, int, tuple]] = []
        self.order = itertools.count()
        self.stop_checked, self.stopped = 0.0, False

    def new(self) -> tuple[str, int, bool]:
        draw = self.rng.random()
        share = self.plan["write_share"]
        kind = "init" if draw >= share else ("sms" if draw < share / 2 else "post")
        return kind, self.callers.draw(), False

    def verify_later(self, caller: int) -> None:
        for delay in self.plan["verify_after"]:
            entry = (time.monotonic() + delay, next(self.order), ("init", caller, True))
            heapq.heappush(self.verifies, entry)

    def stopping(self) -> bool:
        now = time.monotonic()
        if now - self.stop_checked >= 0.1:
            self.stop_checked = now
            self.stopped = now >= self.deadline or os.path.exists(self.plan["stop_file"])
        return self.stopped

    async def next(self) -> tuple | None:
        while not self.stopping():
            now = time.monotonic()
            if self.verifies and self.verifies[0][0] <= now:
                return heapq.heappop(self.verifies)[2]
            if not self.interval or self.slot <= now:
                self.slot = max(self.slot, now - 1.0) + self.interval
                return self.new()
            due = self.verifies[0][0] if self.verifies else self.slot
            await asyncio.sleep(min(self.slot, due, now + 0.1) - now)
        return None


class Requests:
    """Builds each kind of request, validly signed, with unique provider ids."""

    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.tag = plan["tag"]
        self.numbers = itertools.count()

    def http(self, path: str, headers: dict, body: bytes) -> bytes:
        plan = self.plan
        head = f"POST {path} HTTP/1.1\r\nHost: {plan['host']}:{plan['port']}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    def initiation(self, phone: str) -> bytes:
        payload = {
            "caller_id": phone,
            "called_number": self.plan["org_number"],
            "call_sid": f"CA{self.tag}{next(self.numbers):010d}",
            "agent_id": "agent_bench",
        }
        headers = {"Content-Type": "application/json"}
        headers[self.plan["initiation_header"]] = self.plan["initiation_secret"]
        return self.http(INITIATION_PATH, headers, json.dumps(payload).encode())

    def sms(self, phone: str, seq: int) -> tuple[bytes, str]:
        sid = f"SM{self.tag}{seq:012d}"
        params = {
            "MessageSid": sid,
            "AccountSid": "ACbench",
            "From": phone,
            "To": self.plan["org_number"],
            "Body": f"Is the e-bike still available? mk{seq}",
            "NumMedia": "0",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        url = self.plan["public_base_url"] + SMS_PATH
        signature = twilio_signature(
            self.plan["twilio_token"], url, {k: [v] for k, v in params.items()}
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        headers["X-Twilio-Signature"] = signature
        return self.http(SMS_PATH, headers, urlencode(params).encode()), sid

    def post_call(self, phone: str, seq: int) -> tuple[bytes, str]:
        conversation_id = f"conv_{self.tag}_{seq}"
        now = int(time.time())
        envelope = {
            "type": "post_call_transcription",
            "event_timestamp": now,
            "data": post_call_data(conversation_id, phone, self.plan["org_number"], seq, now),
        }
        body = json.dumps(envelope).encode()
        signature = elevenlabs_signature(self.plan["elevenlabs_secret"], now, body)
        headers = {"Content-Type": "application/json", "ElevenLabs-Signature": signature}
        return self.http(POST_CALL_PATH, headers, body), conversation_id


def post_call_data(conversation_id: str, phone: str, org_number: str, seq: int, now: int) -> dict:
    name = f"Bench Caller {seq}"
    return {
        "agent_id": "agent_bench",
        "conversation_id": conversation_id,
        "status": "done",
        "transcript": [
            {"role": "agent", "message": "Hi, how can I help?", "time_in_call_secs": 0},
            {"role": "user", "message": f"This is {name}.", "time_in_call_secs": 4},
        ],
        "metadata": {
            "start_time_unix_secs": now - 86_400,
            "call_duration_secs": 60,
            "termination_reason": "client disconnected",
            "phone_call": {
                "direction": "inbound",
                "agent_number": org_number,
                "external_number": phone,
                "call_sid": f"CP{conversation_id}",
            },
        },
        "analysis": {
            "call_successful": "success",
            "transcript_summary": f"{name} asked about an e-bike.",
            "call_summary_title": "E-bike enquiry",
            "data_collection_results": {"customer_name": {"value": name}},
        },
    }


class Load:
    """The run's state: who has a write in flight, what each caller's acknowledged writes are,
    and one record per request."""

    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.source = Source(plan)
        self.requests = Requests(plan)
        self.sequence = itertools.count(1)
        self.in_flight: set[int] = set()
        self.acked: dict[int, list] = {}  # caller -> [text marker n, name n] acknowledged
        # Callers whose context a perfect cache would hold: those called before. (A write
        # re-warms a context it drops, but does not warm one that was not cached.)
        self.seen: set[int] = set()
        self.records: list[list] = []
        self.written = {"sms": [], "post": []}  # provider ids of acknowledged writes
        self.refused = {"sms": 0, "post": 0}
        self.stale_examples: list[dict] = []
        self.errors = 0

    def prepare(self, ticket: tuple) -> tuple[bytes, dict]:
        kind, caller, verify = ticket
        if kind != "init" and caller in self.in_flight:
            kind = "init"
        phone = self.plan["callers"][caller]
        note = {"kind": kind, "caller": caller, "verify": verify}
        if kind == "init":
            note["expect"] = list(self.acked.get(caller, [None, None]))
            note["first"] = caller not in self.seen
            self.seen.add(caller)
            return self.requests.initiation(phone), note
        self.in_flight.add(caller)
        note["seq"] = next(self.sequence)
        build = self.requests.sms if kind == "sms" else self.requests.post_call
        request, note["id"] = build(phone, note["seq"])
        return request, note

    def finish(self, note: dict, sent_at: float, seconds: float, status: int, body: bytes):
        flags = (VERIFY if note["verify"] else 0) | (FIRST if note.get("first") else 0)
        if note["kind"] == "init":
            flags |= self.check(note, status, body, sent_at)
        else:
            self.acknowledge(note, status)
        self.records.append(
            [round(sent_at, 4), round(seconds * 1000, 3), KINDS[note["kind"]], status, flags]
        )

    def acknowledge(self, note: dict, status: int) -> None:
        caller, kind = note["caller"], note["kind"]
        self.in_flight.discard(caller)
        if not 200 <= status < 300:
            self.refused[kind] += 1
            return
        self.written[kind].append(note["id"])
        self.acked.setdefault(caller, [None, None])[0 if kind == "sms" else 1] = note["seq"]
        self.source.verify_later(caller)

    def check(self, note: dict, status: int, body: bytes, sent_at: float) -> int:
        if status != 200:
            return 0
        variables = json.loads(body)["dynamic_variables"]
        if variables["organization_id"] == "":
            return FALLBACK
        text_n, name_n = note["expect"]
        flags = CHECKED if (text_n, name_n) != (None, None) else 0
        markers = [int(n) for n in MARKER.findall(variables["conversation_context"])]
        if text_n is not None and max(markers, default=-1) < text_n:
            flags |= STALE_SMS
        named = NAME.match(variables["customer_name"])
        if name_n is not None and (int(named.group(1)) if named else -1) < name_n:
            flags |= STALE_NAME
        if flags & (STALE_SMS | STALE_NAME) and len(self.stale_examples) < 20:
            self.stale_examples.append(stale_example(note, variables, sent_at, markers))
        return flags


def stale_example(note: dict, variables: dict, sent_at: float, markers: list[int]) -> dict:
    return {
        "sent_at": round(sent_at, 3),
        "caller": note["caller"],
        "verify": note["verify"],
        "expected_text_marker": note["expect"][0],
        "markers_seen": markers[-3:],
        "expected_name": note["expect"][1],
        "customer_name": variables["customer_name"],
    }


async def open_connection(plan: dict):
    return await asyncio.open_connection(plan["host"], plan["port"])


async def connection(load: Load) -> None:
    reader, writer = await open_connection(load.plan)
    while (ticket := await load.source.next()) is not None:
        request, note = load.prepare(ticket)
        sent_at, started = time.time(), time.perf_counter()
        try:
            writer.write(request)
            status, body = await read_answer(reader)
        except CONNECTION_ERRORS:
            load.errors += 1
            status, body = 0, b""
            writer.close()
            reader, writer = await open_connection(load.plan)
        load.finish(note, sent_at, time.perf_counter() - started, status, body)
    writer.close()


def summary(load: Load) -> dict:
    flags = [r[4] for r in load.records]
    return {
        "requests": len(load.records),
        "errors": load.errors,
        "stale_text": sum(1 for f in flags if f & STALE_SMS),
        "stale_name": sum(1 for f in flags if f & STALE_NAME),
        "fallbacks": sum(1 for f in flags if f & FALLBACK),
        "written": load.written,
        "refused": load.refused,
        "stale_examples": load.stale_examples,
        "callers_seen": len(load.seen),
    }


def main() -> int:
    load = Load(json.load(sys.stdin))

    async def drive() -> None:
        await asyncio.gather(*(connection(load) for _ in range(load.plan["connections"])))

    print(json.dumps({"started": time.time()}), flush=True)
    asyncio.run(drive())
    with open(load.plan["records_file"], "w") as out:
        json.dump(load.records, out)
    print(json.dumps(summary(load)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
