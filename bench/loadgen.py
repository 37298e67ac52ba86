"""A light closed-loop HTTP/1.1 load client, run in its own process: `python -m bench.loadgen`
reads its plan as JSON on stdin and prints one JSON line of results on stdout.

The plan: host, port, path, headers (a dict), connections, warmup and duration (seconds),
called_number, callers (phone numbers, used in turn, each once until all are used), call_sid_tag.
Each connection is kept alive and sends its next POST as soon as the previous answer is read.
A request is measured when it starts after the warm-up, and until `warmup + duration`.
The answers' bodies are checked for the initiation fallback (defaults answered on a failure).
"""

import asyncio
import json
import re
import resource
import statistics
import sys
import time

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)
FALLBACK_MARK = b'"organization_id": ""'


class Load:
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
        body = json.dumps(
            {
                "caller_id": self.callers[n % len(self.callers)],
                "called_number": plan["called_number"],
                "call_sid": f"CA{plan['call_sid_tag']}{n:010d}",
                "agent_id": "agent_bench",
            }
        ).encode()
        head = f"POST {plan['path']} HTTP/1.1\r\nHost: {plan['host']}:{plan['port']}\r\n"
        extra = "".join(f"{name}: {value}\r\n" for name, value in plan["headers"].items())
        length = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        return (head + extra + length).encode() + body

    def record(self, started: float, status: int, body: bytes, measure_from: float) -> None:
        if started < measure_from:
            self.warmup_requests += 1
            return
        self.latencies.append(time.perf_counter() - started)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if FALLBACK_MARK in body:
            self.fallbacks += 1


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = CONTENT_LENGTH.search(head)
    if length is not None:
        return int(head[9:12]), await reader.readexactly(int(length.group(1)))
    if CHUNKED.search(head) is None:
        raise ConnectionError(f"an answer without Content-Length: {head[:200]!r}")
    return int(head[9:12]), await read_chunks(reader)


async def read_chunks(reader: asyncio.StreamReader) -> bytes:
    """A chunked body (what daphne sends for a response that declares no length)."""
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return body
        body += chunk[:-2]


async def connection(load: Load, measure_from: float, until: float) -> None:
    reader, writer = await asyncio.open_connection(load.plan["host"], load.plan["port"])
    while time.perf_counter() < until:
        request = load.next_request()
        started = time.perf_counter()
        try:
            writer.write(request)
            status, body = await read_answer(reader)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            load.errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection(load.plan["host"], load.plan["port"])
            continue
        load.record(started, status, body, measure_from)
    writer.close()


async def drive(load: Load) -> None:
    measure_from = time.perf_counter() + load.plan["warmup"]
    until = measure_from + load.plan["duration"]
    await asyncio.gather(
        *(connection(load, measure_from, until) for _ in range(load.plan["connections"]))
    )


def summary(load: Load) -> dict:
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


def main() -> int:
    load = Load(json.load(sys.stdin))
    asyncio.run(drive(load))
    print(json.dumps(summary(load)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
