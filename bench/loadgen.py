"""The only load client of the bench, run in its own process: `python -m bench.loadgen` reads its
plan as JSON on stdin and prints one JSON line of results on stdout. HTTP/1.1 over keep-alive
connections, each sending its next request as soon as the previous answer is read (pure-Python
asyncio); a connection that fails counts as an error and is opened again. Two kinds of plan, by
`mode`:

"initiation" (the default; bench.processes.run_load): closed loop, call initiations only. The
plan: host, port, path, headers (a dict), connections, warmup and duration (seconds),
called_number, callers (phone numbers, used in turn, each once until all are used), call_sid_tag.
A request is measured when it starts after the warm-up, and until `warmup + duration`. The
answers' bodies are checked for the initiation fallback (defaults answered on a failure).

"mixed" (bench.workload.LoadRun): prints `{"started": <unix time>}` as it starts, writes one row
per request to the plan's `records_file` ([sent at, ms, kind, status, flags]) and then prints its
results.

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
import resource
import statistics
import sys
import time
from urllib.parse import urlencode

from leads.webhooks.signatures import elevenlabs_signature, twilio_signature

INITIATION_PATH = "/webhooks/elevenlabs/conversation-initiation"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)
CONNECTION_ERRORS = (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


# --- what both kinds of plan share: the requests, the connections -------------------------------


def post(plan: dict, path: str, headers: dict, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {plan['host']}:{plan['port']}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def initiation(plan: dict, headers: dict, caller: str, called_number: str, call_sid: str) -> bytes:
    """A call initiation as ElevenLabs sends it, to the plan's path (else the initiation's)."""
    payload = {
        "caller_id": caller,
        "called_number": called_number,
        "call_sid": call_sid,
        "agent_id": "agent_bench",
    }
    headers = {"Content-Type": "application/json", **headers}
    path = plan.get("path", INITIATION_PATH)
    return post(plan, path, headers, json.dumps(payload).encode())


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status, length = int(head[9:12]), CONTENT_LENGTH.search(head)
    if length is not None:
        return status, await reader.readexactly(int(length.group(1)))
    if CHUNKED.search(head):
        return status, await read_chunks(reader)
    raise ConnectionError(f"an answer without Content-Length or chunks: {head[:200]!r}")


async def read_chunks(reader: asyncio.StreamReader) -> bytes:
    """A chunked body (daphne sends one when the app's response has no Content-Length)."""
    body = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the chunk's CRLF
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass  # trailers, up to the blank line
    return bytes(body)


async def keep_alive(plan: dict, next_request, answered, failed) -> None:
    """One connection: `await next_request()` gives (request bytes, note) or None to stop;
    `answered(note, sent_at, started, status, body)` or `failed(note, sent_at, started)` is told
    of each (sent_at: time.time(); started: perf_counter, taken just before sending)."""
    reader, writer = await asyncio.open_connection(plan["host"], plan["port"])
    while (item := await next_request()) is not None:
        request, note = item
        sent_at, started = time.time(), time.perf_counter()
        try:
            writer.write(request)
            status, body = await read_answer(reader)
        except CONNECTION_ERRORS:
            writer.close()
            reader, writer = await asyncio.open_connection(plan["host"], plan["port"])
            failed(note, sent_at, started)
            continue
        answered(note, sent_at, started, status, body)
    writer.close()


# --- "initiation": closed loop, fixed time --------------------------------------------------------

FALLBACK_MARK = b'"organization_id": ""'


class InitiationLoad:
    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.callers = plan["callers"]
        self.sent = 0
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.fallbacks = 0
        self.errors = 0
        self.warmup_requests = 0

    def next_request(self) -> bytes:
        n, plan = self.sent, self.plan
        self.sent += 1
        caller = self.callers[n % len(self.callers)]
        call_sid = f"CA{plan['call_sid_tag']}{n:010d}"
        return initiation(plan, plan["headers"], caller, plan["called_number"], call_sid)

    def record(self, started: float, status: int, body: bytes, measure_from: float) -> None:
        if started < measure_from:
            self.warmup_requests += 1
            return
        self.latencies.append(time.perf_counter() - started)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if FALLBACK_MARK in body:
            self.fallbacks += 1


async def initiation_connection(load: InitiationLoad, measure_from: float, until: float) -> None:
    async def next_request():
        return None if time.perf_counter() >= until else (load.next_request(), None)

    def answered(note, sent_at, started, status, body):
        load.record(started, status, body, measure_from)

    def failed(note, sent_at, started):
        load.errors += 1

    await keep_alive(load.plan, next_request, answered, failed)


async def drive(load: InitiationLoad) -> None:
    measure_from = time.perf_counter() + load.plan["warmup"]
    until = measure_from + load.plan["duration"]
    await asyncio.gather(
        *(initiation_connection(load, measure_from, until) for _ in range(load.plan["connections"]))
    )


def summary(load: InitiationLoad) -> dict:
    ms = sorted(x * 1000 for x in load.latencies) or [0.0]
    centiles = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "requests": len(load.latencies),
        "rps": round(len(load.latencies) / load.plan["duration"], 1),
        "p50_ms": round(centiles[49], 2),
        "p95_ms": round(centiles[94], 2),
        "p99_ms": round(centiles[98], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "max_ms": round(ms[-1], 2),
        "statuses": {str(code): n for code, n in sorted(load.statuses.items())},
        "non_2xx": sum(n for code, n in load.statuses.items() if not 200 <= code < 300),
        "fallbacks": load.fallbacks,
        "errors": load.errors,
        "warmup_requests": load.warmup_requests,
        "sent": load.sent,
        "callers_reused": max(0, load.sent - len(load.callers)),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def run_initiation(plan: dict) -> None:
    load = InitiationLoad(plan)
    asyncio.run(drive(load))
    print(json.dumps(summary(load)), flush=True)


# --- "mixed": initiations and writes, paced, every answer checked for staleness ----------------


POST_CALL_PATH = "/webhooks/elevenlabs/post-call"
SMS_PATH = "/webhooks/twilio/sms"
KINDS = {"init": 0, "sms": 1, "post": 2}
# Record flags. CHECKED: an initiation answer for a caller with an acknowledged write before it.
FALLBACK, STALE_SMS, STALE_NAME, FIRST, VERIFY, CHECKED = 1, 2, 4, 8, 16, 32
MARKER = re.compile(r"\bmk(\d+)\b")
NAME = re.compile(r"^Bench Caller (\d+)$")


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

    def initiation(self, phone: str) -> bytes:
        call_sid = f"CA{self.tag}{next(self.numbers):010d}"
        headers = {self.plan["initiation_header"]: self.plan["initiation_secret"]}
        return initiation(self.plan, headers, phone, self.plan["org_number"], call_sid)

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
        return post(self.plan, SMS_PATH, headers, urlencode(params).encode()), sid

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
        return post(self.plan, POST_CALL_PATH, headers, body), conversation_id


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


class MixedLoad:
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


async def mixed_connection(load: MixedLoad) -> None:
    async def next_request():
        ticket = await load.source.next()
        return None if ticket is None else load.prepare(ticket)

    def answered(note, sent_at, started, status, body):
        load.finish(note, sent_at, time.perf_counter() - started, status, body)

    def failed(note, sent_at, started):
        load.errors += 1
        load.finish(note, sent_at, time.perf_counter() - started, 0, b"")

    await keep_alive(load.plan, next_request, answered, failed)


def mixed_summary(load: MixedLoad) -> dict:
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


def run_mixed(plan: dict) -> None:
    load = MixedLoad(plan)

    async def drive() -> None:
        await asyncio.gather(*(mixed_connection(load) for _ in range(plan["connections"])))

    print(json.dumps({"started": time.time()}), flush=True)
    asyncio.run(drive())
    with open(plan["records_file"], "w") as out:
        json.dump(load.records, out)
    print(json.dumps(mixed_summary(load)), flush=True)


def main() -> int:
    plan = json.load(sys.stdin)
    run = run_mixed if plan.get("mode") == "mixed" else run_initiation
    run(plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
