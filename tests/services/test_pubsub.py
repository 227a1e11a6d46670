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


def test_own_results_come_over_the_gateways_wire_and_survive_a_dropped_connection(redis_url: str):
    """With a redis:// URL the listener's pattern is read on its own connection
    (services/redis_wire.py): results arrive; when Redis drops that connection it comes back
    by itself, and a result published while it was away is read from its key."""
    from genserve.protocol import RESULT_PREFIX
    from genserve.services.backends.celery import ResultListener

    async def one_gateway() -> None:
        client = redis.asyncio.from_url(redis_url)
        listener = ResultListener(client, redis_url)
        listener.SWEEP_S = 60.0  # only the publish, or the re-read after a reconnect, may deliver
        try:
            first = RESULT_PREFIX + listener.new_task_id()
            future = await listener.expect(first)
            assert await client.publish(first, b"one") == 1  # the wire's subscription is in place
            assert await asyncio.wait_for(future, 2.0) == b"one"
            assert (await client.pubsub_numsub(first))[0][1] == 0  # a pattern, no channel of its own

            wire = [c for c in await client.client_list() if c.get("name") == f"genserve-results-{listener.token}"]
            assert len(wire) == 1 and wire[0]["psub"] == "1" and wire[0]["sub"] == "0"
            second = RESULT_PREFIX + listener.new_task_id()
            future = await listener.expect(second)
            await client.client_kill_filter(_id=wire[0]["id"])
            await client.set(second, b"stored meanwhile")  # its publish would reach nobody now
            assert await client.publish(second, b"lost") == 0
            assert await asyncio.wait_for(future, 5.0) == b"stored meanwhile"  # re-read once back

            third = RESULT_PREFIX + listener.new_task_id()
            future = await listener.expect(third)
            assert await client.publish(third, b"three") == 1
            assert await asyncio.wait_for(future, 2.0) == b"three"
            await client.delete(second)
        finally:
            await listener.close()
            await client.aclose()

    asyncio.run(one_gateway())


def test_the_wire_speaks_only_plain_redis_urls():
    from genserve.services import redis_wire

    assert redis_wire.supported("redis://:pw@127.0.0.1:6379/2")
    assert not redis_wire.supported("rediss://127.0.0.1:6380/0")  # TLS: redis-py's reader
    assert not redis_wire.supported("unix:///run/redis.sock")
    assert not redis_wire.supported(None)
    assert redis_wire.pack("LPUSH", "q", b"\x00\r\n") == b"*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$3\r\n\x00\r\n\r\n"


def test_commands_on_the_wire_reconnect_and_report_what_they_cannot_know(redis_url: str):
    """The gateway's LPUSH connection: replies in order, pipelined; after Redis drops the
    connection the next call connects again; an error reply is an error."""
    from genserve.services.redis_wire import Commands, ReplyError

    async def run() -> None:
        client = redis.asyncio.from_url(redis_url)
        name = f"genserve-publish-test-{uuid.uuid4().hex[:8]}"
        commands = Commands(redis_url, name=name)
        key = f"test-wire:{uuid.uuid4().hex}"
        try:
            replies = await asyncio.gather(*(commands.call("LPUSH", key, str(i)) for i in range(50)))
            assert replies == list(range(1, 51))  # each reply reached its own caller
            assert await client.lrange(key, 0, 1) == [b"49", b"48"]
            (me,) = [c for c in await client.client_list() if c.get("name") == name]
            await client.client_kill_filter(_id=me["id"])
            await asyncio.sleep(0.05)
            assert await commands.call("LPUSH", key, "after") == 51  # connected again
            assert len([c for c in await client.client_list() if c.get("name") == name]) == 1
            await client.set(key + ":s", "x")
            try:
                await commands.call("LPUSH", key + ":s", "v")
                raise AssertionError("an LPUSH on a string key must fail")
            except ReplyError as exc:
                assert "WRONGTYPE" in str(exc)
        finally:
            commands.close()
            await client.delete(key, key + ":s")
            await client.aclose()

    asyncio.run(run())
