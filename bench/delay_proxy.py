"""A TCP delay line: `python -m bench.delay_proxy --port P --target HOST:PORT --delay-ms 2`.

Listens on 127.0.0.1:P and forwards every connection to the target. Every chunk read from either
side is held until `delay` after the moment it was read, then written to the other side: each
direction gets the delay added (a query's round trip gets it twice), without limiting throughput,
since chunks keep arriving and queueing while earlier ones wait. asyncio's timers are
millisecond-grained, so a chunk is held a little longer than `delay`; the proxy measures how much
and prints one JSON line with the hold times when it gets SIGTERM.
"""

import argparse
import asyncio
import json
import signal
import statistics
import sys

CHUNK = 65536


class Holds:
    """How long chunks were actually held, in ms (a bounded sample: the first 200,000)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.chunks = 0
        self.bytes = 0

    def record(self, held_s: float, size: int) -> None:
        self.chunks += 1
        self.bytes += size
        if len(self.samples) < 200_000:
            self.samples.append(held_s * 1000)

    def summary(self) -> dict:
        held = sorted(self.samples) or [0.0]
        return {
            "chunks": self.chunks,
            "bytes": self.bytes,
            "held_ms_mean": round(statistics.fmean(held), 3),
            "held_ms_p50": round(held[len(held) // 2], 3),
            "held_ms_p99": round(held[int(len(held) * 0.99)], 3),
            "held_ms_max": round(held[-1], 3),
        }


async def delay_line(reader, writer, delay: float, holds: Holds) -> None:
    """Copy reader to writer, each chunk written `delay` after it was read."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()

    async def pump() -> None:
        while data := await reader.read(CHUNK):
            queue.put_nowait((loop.time(), data))
        queue.put_nowait((None, b""))

    pumping = asyncio.create_task(pump())
    try:
        while (item := await queue.get())[0] is not None:
            read_at, data = item
            await asyncio.sleep(max(0.0, read_at + delay - loop.time()))
            writer.write(data)
            holds.record(loop.time() - read_at, len(data))
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        pumping.cancel()
        writer.close()


async def serve(port: int, host: str, target_port: int, delay: float) -> None:
    holds = Holds()

    async def connect(client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, target_port)
            await asyncio.gather(
                delay_line(client_reader, server_writer, delay, holds),
                delay_line(server_reader, client_writer, delay, holds),
            )
        except (OSError, asyncio.CancelledError):  # refused, or the proxy is stopping
            client_writer.close()

    server = await asyncio.start_server(connect, "127.0.0.1", port)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    print("ready", flush=True)
    await stopped.wait()
    server.close()
    print(json.dumps(holds.summary()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delay_proxy", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="listen on 127.0.0.1:PORT")
    parser.add_argument("--target", default="127.0.0.1:5432", help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="added in each direction")
    args = parser.parse_args(argv)
    host, _, target_port = args.target.rpartition(":")
    asyncio.run(serve(args.port, host, int(target_port), args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
