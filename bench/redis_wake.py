"""How long an idle process takes to see a Redis message, with nothing of genserve running.

    .venv/bin/python -m bench.redis_wake [--gap-ms 3] [--messages 2000]

A private Redis (append-only, fsync every second, as the benchmarks run it), one process
blocked in BRPOP, and this one sending LPUSHes of its own send time from redis-py's asyncio
client with a pause between them: prints the LPUSH round trip and the time from the send to
the BRPOP's return in the other process (medians). With pauses the cores go idle between
messages, as they do between a lone caller's requests: this is the floor under each of the
four hops across Redis that `bench/hops.py` measures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import subprocess
import tempfile
import time


def consume(port: int, out: multiprocessing.Queue) -> None:
    import redis

    client = redis.Redis(port=port)
    delays = []
    while True:
        _, value = client.brpop("wake", 0)
        now = time.time()
        if value == b"stop":
            break
        delays.append(now - float(value))
    out.put(statistics.median(delays))


async def produce(port: int, messages: int, gap_s: float) -> float:
    import redis.asyncio

    client = redis.asyncio.Redis(port=port)
    trips = []
    for _ in range(messages):
        sent = time.time()
        await client.lpush("wake", repr(sent))
        trips.append(time.time() - sent)
        await asyncio.sleep(gap_s)
    await client.lpush("wake", "stop")
    await client.aclose()
    return statistics.median(trips)


def main() -> None:
    from bench.__main__ import free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gap-ms", type=float, default=3.0)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "yes", "--appendfsync", "everysec", "--dir", tempfile.mkdtemp()],
                              stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.4)
        out: multiprocessing.Queue = multiprocessing.Queue()
        consumer = multiprocessing.Process(target=consume, args=(port, out))
        consumer.start()
        time.sleep(0.3)
        trip = asyncio.run(produce(port, args.messages, args.gap_ms / 1000))
        delivery = out.get(timeout=60)
        consumer.join(timeout=10)
        print(f"{args.messages} messages, {args.gap_ms:g} ms apart: LPUSH round trip {trip * 1e6:.0f} us, "
              f"send -> BRPOP returns in the other process {delivery * 1e6:.0f} us (medians)")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
