"""`demo traffic`: signed webhook deliveries, as ElevenLabs and Twilio would send them, to a
running app, at a steady rate. Callers repeat the way real ones do (a Zipf-like mix: a few
leads call and text often, most rarely, and some callers are new). A call is two deliveries
(initiation, then the post-call transcription); a text is one.

Standard library HTTP only (one keep-alive connection, explicit timeouts): this is a load
generator talking to opsdash itself, not an outbound provider call."""

import http.client
import json
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

from django.conf import settings
from django.utils import timezone

from leads.demo import data
from leads.webhooks.signatures import elevenlabs_signature, twilio_signature

INITIATION = "initiation"
POST_CALL = "post-call"
SMS = "sms"
PATHS = {
    INITIATION: "/webhooks/elevenlabs/conversation-initiation",
    POST_CALL: "/webhooks/elevenlabs/post-call",
    SMS: "/webhooks/twilio/sms",
}
SECRETS = ("ELEVENLABS_INITIATION_SECRET", "ELEVENLABS_WEBHOOK_SECRET", "TWILIO_AUTH_TOKEN")
# The settings each endpoint's signature depends on, named when the app refuses one.
SIGNED_WITH = {
    INITIATION: "ELEVENLABS_INITIATION_SECRET (sent in ELEVENLABS_INITIATION_HEADER)",
    POST_CALL: "ELEVENLABS_WEBHOOK_SECRET",
    SMS: "TWILIO_AUTH_TOKEN (over PUBLIC_BASE_URL + path)",
}
ZIPF_EXPONENT = 1.1
NEW_CALLER_SHARE = 0.15
CALL_SHARE = 0.4
# Consecutive deliveries without an HTTP answer after which the app counts as gone.
GIVE_UP_AFTER = 5


class AppUnreachable(Exception):
    pass


class Refused(Exception):
    """The app refused a delivery's credentials (401/403) or lacks its secret (503)."""

    def __init__(self, endpoint: str, status: int, error: str) -> None:
        super().__init__(f"HTTP {status} from the {endpoint} webhook: {error}")
        self.endpoint = endpoint
        self.status = status
        self.error = error


def missing_secrets() -> list[str]:
    """The webhook secrets this process lacks (none needed when WEBHOOK_VERIFY=false)."""
    if not settings.WEBHOOK_VERIFY:
        return []
    return [name for name in SECRETS if not getattr(settings, name)]


# --- deliveries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    endpoint: str
    body: bytes
    headers: dict[str, str]


def initiation(caller: str, call_sid: str) -> Delivery:
    body = json.dumps(
        {
            "caller_id": caller,
            "agent_id": data.AGENT_ID,
            "called_number": data.NUMBER,
            "call_sid": call_sid,
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    if settings.ELEVENLABS_INITIATION_SECRET:
        headers[settings.ELEVENLABS_INITIATION_HEADER] = settings.ELEVENLABS_INITIATION_SECRET
    return Delivery(INITIATION, body, headers)


def post_call(caller: str, call_sid: str, rng: random.Random, name: str) -> Delivery:
    """The transcription report of the call `call_sid`, signed when it is sent."""
    bike, budget = rng.choice(data.BIKES), rng.choice([900, 1500, 2500])
    started = int(time.time()) - rng.randint(30, 300)
    turns = []
    for n in range(rng.randint(2, 6)):
        role = "user" if n % 2 == 0 else "agent"
        pool = data.CUSTOMER_LINES if role == "user" else data.AGENT_LINES
        line = data.say(rng.choice(pool), name, bike, budget)
        turns.append({"role": role, "message": line, "time_in_call_secs": n * 7})
    envelope = {
        "type": "post_call_transcription",
        "event_timestamp": int(time.time()),
        "data": {
            "agent_id": data.AGENT_ID,
            "conversation_id": f"conv_demo_{uuid.uuid4().hex}",
            "status": "done",
            "transcript": turns,
            "metadata": {
                "start_time_unix_secs": started,
                "call_duration_secs": len(turns) * 7 + 5,
                "termination_reason": "end_call tool was called.",
                "phone_call": {
                    "direction": "inbound",
                    "agent_number": data.NUMBER,
                    "external_number": caller,
                    "call_sid": call_sid,
                },
            },
            "analysis": _analysis(rng, name, bike, budget),
        },
    }
    return Delivery(POST_CALL, json.dumps(envelope).encode(), {"Content-Type": "application/json"})


def _analysis(rng: random.Random, name: str, bike: str, budget: int) -> dict:
    collected = {
        "customer_name": name,
        "bike_interest": bike,
        "budget": budget,
        "lead_status": rng.choice(["contacted", "qualified", "hot"]),
        "sentiment": rng.choice(data.SENTIMENTS),
    }
    return {
        "call_successful": "success",
        "transcript_summary": f"{name.split()[0]} called about the {bike}.",
        "call_summary_title": f"{bike} enquiry",
        "data_collection_results": {
            key: {"data_collection_id": key, "value": value} for key, value in collected.items()
        },
    }


def inbound_sms(sender: str, body: str) -> Delivery:
    params = {
        "MessageSid": f"SM{uuid.uuid4().hex}",
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": data.NUMBER,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    return Delivery(
        SMS, urlencode(params).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )


def signed(delivery: Delivery, path: str) -> Delivery:
    """The delivery with its signature computed now (ElevenLabs signs a timestamp)."""
    headers = dict(delivery.headers)
    if delivery.endpoint == POST_CALL and settings.ELEVENLABS_WEBHOOK_SECRET:
        headers["ElevenLabs-Signature"] = elevenlabs_signature(
            settings.ELEVENLABS_WEBHOOK_SECRET, int(time.time()), delivery.body
        )
    if delivery.endpoint == SMS and settings.TWILIO_AUTH_TOKEN:
        params = _form_params(delivery.body)
        url = settings.PUBLIC_BASE_URL + path
        headers["X-Twilio-Signature"] = twilio_signature(settings.TWILIO_AUTH_TOKEN, url, params)
    return Delivery(delivery.endpoint, delivery.body, headers)


def _form_params(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode(), keep_blank_values=True)


# --- who calls ----------------------------------------------------------------------------


class CallerMix:
    """Who calls or texts next: a seeded lead picked by Zipf-like popularity (the lead of rank k
    is picked in proportion to 1/k^1.1), or now and then someone new."""

    def __init__(self, leads: int, rng: random.Random) -> None:
        self.rng = rng
        self._ranks = range(leads)
        weights = [1 / (rank + 1) ** ZIPF_EXPONENT for rank in self._ranks]
        self._cumulative = [sum(weights[: n + 1]) for n in range(len(weights))]
        self._pending: deque[Delivery] = deque()
        self._now = timezone.now()

    def next_delivery(self) -> Delivery:
        if not self._pending:
            self._pending.extend(self._interaction())
        return self._pending.popleft()

    def _interaction(self) -> list[Delivery]:
        phone, name = self._caller()
        if self.rng.random() < CALL_SHARE:
            call_sid = f"CA{uuid.uuid4().hex}"
            return [initiation(phone, call_sid), post_call(phone, call_sid, self.rng, name)]
        line = self.rng.choice(data.CUSTOMER_TEXTS)
        return [inbound_sms(phone, data.say(line, name, self.rng.choice(data.BIKES), 1500))]

    def _caller(self) -> tuple[str, str]:
        if not self._cumulative or self.rng.random() < NEW_CALLER_SHARE:
            first, last = self.rng.choice(data.FIRST_NAMES), self.rng.choice(data.LAST_NAMES)
            return data.new_caller_phone(self.rng), f"{first} {last}"
        index = self.rng.choices(self._ranks, cum_weights=self._cumulative)[0]
        plan = data.lead_plan(index, self._now)
        return plan.phone, plan.name


# --- sending ------------------------------------------------------------------------------


class AppClient:
    """POSTs to the app over one keep-alive connection, reconnecting when the server closed it.
    Raises AppUnreachable when no HTTP answer comes back."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.prefix = parts.path.rstrip("/")
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._connection = kind(parts.hostname, parts.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes = b"", headers=None) -> tuple[int, bytes]:
        try:
            return self._exchange(method, path, body, headers or {})
        except (http.client.HTTPException, ConnectionResetError, BrokenPipeError):
            # The server closed the keep-alive connection: once more on a fresh one (the
            # webhooks are idempotent, so a delivery that did arrive is stored once).
            self._connection.close()
        except OSError as exc:
            self._connection.close()
            raise AppUnreachable(str(exc) or type(exc).__name__) from exc
        try:
            return self._exchange(method, path, body, headers or {})
        except (http.client.HTTPException, OSError) as exc:
            self._connection.close()
            raise AppUnreachable(str(exc) or type(exc).__name__) from exc

    def _exchange(self, method: str, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        self._connection.request(method, self.prefix + path, body, headers)
        response = self._connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._connection.close()


@dataclass
class Tally:
    """Answers by (endpoint, status): a status code, or "error" for no answer."""

    total: Counter = field(default_factory=Counter)
    interval: Counter = field(default_factory=Counter)

    def add(self, endpoint: str, status: str) -> None:
        self.total[(endpoint, status)] += 1
        self.interval[(endpoint, status)] += 1

    def take_interval(self) -> Counter:
        taken, self.interval = self.interval, Counter()
        return taken


def describe(counts: Counter) -> str:
    """ "initiation 200:10  post-call 200:9  sms 200:30" (endpoints in a fixed order)."""
    parts = []
    for endpoint in PATHS:
        statuses = sorted((str(s), n) for (e, s), n in counts.items() if e == endpoint)
        if statuses:
            parts.append(f"{endpoint} " + " ".join(f"{s}:{n}" for s, n in statuses))
    return "  ".join(parts) or "nothing sent"


def send(client: AppClient, delivery: Delivery, tally: Tally) -> bool:
    """Send one delivery; True if the app answered. Raises Refused on a credentials answer."""
    path = PATHS[delivery.endpoint]
    delivery = signed(delivery, path)
    try:
        status, body = client.request("POST", path, delivery.body, delivery.headers)
    except AppUnreachable:
        tally.add(delivery.endpoint, "error")
        return False
    tally.add(delivery.endpoint, str(status))
    if status in (401, 403, 503):
        raise Refused(delivery.endpoint, status, _error_of(body))
    return True


def _error_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))[:300]
    except (ValueError, AttributeError):
        return body[:300].decode(errors="replace")


@dataclass(frozen=True)
class Schedule:
    rate: float
    duration: float | None
    report_every: float


def run(
    client: AppClient,
    mix: CallerMix,
    schedule: Schedule,
    tally: Tally,
    on_report: Callable[[float, Counter], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Send deliveries at `schedule.rate` a second until `schedule.duration` has passed (or
    forever; Ctrl-C ends it). Returns the seconds it ran. Raises AppUnreachable when the app
    stops answering and Refused when it refuses the credentials."""
    started = clock()
    next_report = started + schedule.report_every
    sent, lag, unanswered = 0, 0.0, 0
    try:
        while schedule.duration is None or sent / schedule.rate + lag < schedule.duration:
            sleep(max(0.0, started + sent / schedule.rate + lag - clock()))
            if clock() >= next_report:
                on_report(clock() - started, tally.take_interval())
                next_report += schedule.report_every
            unanswered = 0 if send(client, mix.next_delivery(), tally) else unanswered + 1
            if unanswered >= GIVE_UP_AFTER:
                raise AppUnreachable(f"{unanswered} deliveries in a row got no answer")
            sent += 1
            # A steady rate; after a stall (a slow answer) at most a second's worth catches up.
            behind = clock() - (started + sent / schedule.rate + lag)
            if behind > 1:
                lag += behind - 1
        if schedule.duration is not None:
            sleep(max(0.0, started + schedule.duration - clock()))  # the last slot's interval
    except KeyboardInterrupt:
        pass
    return clock() - started
