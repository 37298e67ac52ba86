"""A tiny round-robin TCP balancer for the scale scenario: `python -m bench.scale_balancer
--port P --targets host:port,host:port,...`. Each accepted connection is piped, both ways, to
the next target in turn (keep-alive connections stay with one target). Prints "ready" once
listening; on SIGTERM prints one JSON line: connections handed to each target."""

import argparse
import asyncio
import json
import signal
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(port: int, targets: list[tuple[str, int]]) -> dict:
    counts = [0] * len(targets)
    turn = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal turn
        index, turn = turn, (turn + 1) % len(targets)
        counts[index] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*targets[index])
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    return {f"{host}:{p}": n for (host, p), n in zip(targets, counts, strict=True)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--targets", required=True)
    args = parser.parse_args()
    pairs = [t.rsplit(":", 1) for t in args.targets.split(",")]
    summary = asyncio.run(main(args.port, [(h, int(p)) for h, p in pairs]))
    print(json.dumps(summary), flush=True)
    sys.exit(0)
