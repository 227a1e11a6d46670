"""The gateway's shared pub/sub connection, against a real Redis: no subscription is lost."""

from __future__ import annotations

import asyncio
import uuid

import msgpack
import redis.asyncio


def test_first_subscriptions_at_once_all_receive(redis_url: str):
    """Requests arriving together on a fresh gateway each get their stream.

    redis-py opens a PubSub's connection on its first command; two first commands at once
    used to open two, and streams subscribed on the replaced one never received anything
    (seen as 'cannot subscribe to the token stream' on a fast machine).
    """
    from genserve.services.streams import RedisStreams

    async def one_gateway() -> list[object]:
        client = redis.asyncio.from_url(redis_url)
        streams = RedisStreams(client)
        streams.SUBSCRIBE_TIMEOUT_S = 2.0
        try:
            channels = [f"test-stream:{uuid.uuid4().hex}" for _ in range(8)]
            subs = await asyncio.gather(*(streams.subscribe(c) for c in channels))
            for i, channel in enumerate(channels):
                assert await client.publish(channel, msgpack.packb({"start": i, "tokens": []})) == 1
            return [(await asyncio.wait_for(s.queue.get(), 2.0))["start"] for s in subs]
        finally:
            await streams.close()
            await client.aclose()

    for _ in range(5):
        assert asyncio.run(one_gateway()) == list(range(8))


def test_results_are_delivered_to_concurrent_first_waiters(redis_url: str):
    """The result listener's first subscriptions, made at once, all receive their publish."""
    from genserve.services.backends.celery import ResultListener

    async def one_gateway() -> list[bytes]:
        client = redis.asyncio.from_url(redis_url)
        listener = ResultListener(client)
        listener.SWEEP_S = 60.0  # only the publish may deliver (no re-read of stored results)
        try:
            keys = [f"test-result:{uuid.uuid4().hex}" for _ in range(8)]
            futures = await asyncio.gather(*(listener.expect(k) for k in keys))
            await asyncio.sleep(0.05)  # subscriptions are confirmed by Redis asynchronously
            for key in keys:
                await client.publish(key, key.encode())
            return [await asyncio.wait_for(f, 2.0) for f in futures]
        finally:
            await listener.close()
            await client.aclose()

    for _ in range(5):
        keys_back = asyncio.run(one_gateway())
        assert all(k.startswith(b"test-result:") for k in keys_back) and len(set(keys_back)) == 8
