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


def test_results_of_own_task_ids_arrive_without_a_subscription_each(redis_url: str):
    """Task ids from `new_task_id` are covered by the listener's one pattern subscription;
    another key is subscribed on its own; read results are deleted (together, shortly after)."""
    from genserve.protocol import RESULT_PREFIX
    from genserve.services.backends.celery import ResultListener

    async def one_gateway() -> None:
        client = redis.asyncio.from_url(redis_url)
        listener = ResultListener(client)
        listener.SWEEP_S = 60.0  # only the publish may deliver
        try:
            own = [RESULT_PREFIX + listener.new_task_id() for _ in range(8)]
            other = f"test-result:{uuid.uuid4().hex}"
            futures = await asyncio.gather(*(listener.expect(k) for k in [*own, other]))
            await asyncio.sleep(0.05)
            assert len(set(own)) == 8
            numsub = dict(await client.pubsub_numsub(*own, other))
            assert all(numsub[k.encode()] == 0 for k in own) and numsub[other.encode()] == 1
            for key in [*own, other]:
                await client.set(key, b"stored")
                await client.publish(key, key.encode())
            got = [await asyncio.wait_for(f, 2.0) for f in futures]
            assert got == [k.encode() for k in [*own, other]]
            for key in [*own, other]:
                listener.done(key)
            await asyncio.sleep(listener.DELETE_AFTER_S + 0.1)
            assert await client.exists(*own, other) == 0
        finally:
            await listener.close()
            await client.aclose()

    asyncio.run(one_gateway())


def test_two_gateways_receive_only_their_own_results(redis_url: str):
    from genserve.protocol import RESULT_PREFIX
    from genserve.services.backends.celery import ResultListener

    async def two() -> None:
        client = redis.asyncio.from_url(redis_url)
        a, b = ResultListener(client), ResultListener(client)
        a.SWEEP_S = b.SWEEP_S = 60.0
        try:
            ka, kb = RESULT_PREFIX + a.new_task_id(), RESULT_PREFIX + b.new_task_id()
            fa, fb = await a.expect(ka), await b.expect(kb)
            await asyncio.sleep(0.05)
            assert await client.publish(ka, b"a") == 1 and await client.publish(kb, b"b") == 1
            assert await asyncio.wait_for(fa, 2.0) == b"a" and await asyncio.wait_for(fb, 2.0) == b"b"
        finally:
            await a.close()
            await b.close()
            await client.aclose()

    asyncio.run(two())
