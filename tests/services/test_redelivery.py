"""The gateway's lost-message watch against a real Redis (services/redelivery.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import redis
import redis.asyncio

from genserve.services.redelivery import LostMessageWatch


def _message(tag: str) -> bytes:
    return json.dumps({"body": "", "properties": {"delivery_tag": tag}}).encode()


async def _watch(redis_url: str, queue: str, message: bytes, key: str, wait_s: float) -> int:
    client = redis.asyncio.from_url(redis_url)
    watch = LostMessageWatch(client, client)
    watch.CHECK_AFTER_S, watch.INTERVAL_S = 0.2, 0.2
    future = asyncio.get_running_loop().create_future()
    try:
        await watch.wait(future, queue, message, key, time.time() + wait_s)
    except asyncio.TimeoutError:
        pass
    finally:
        await client.aclose()
    return watch.republished


def test_a_message_in_no_queue_not_held_and_without_result_is_sent_again(redis_url: str):
    """Absent twice in a row: pushed back onto its queue's consuming end, once per two looks."""
    client = redis.Redis.from_url(redis_url)
    queue, tag = f"test-lost-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    try:
        assert asyncio.run(_watch(redis_url, queue, _message(tag), f"meta-{tag}", 0.9)) == 1
        assert client.lrange(queue, 0, -1) == [_message(tag)]
    finally:
        client.delete(queue)


def test_a_queued_held_or_answered_message_is_left_alone(redis_url: str):
    """In its queue, in `unacked`, or with a stored result: never republished."""
    client = redis.Redis.from_url(redis_url)
    queue = f"test-lost-{uuid.uuid4().hex[:8]}"
    queued, held, answered = (uuid.uuid4().hex for _ in range(3))
    client.lpush(queue, _message(queued))
    client.hset("unacked", held, "[]")
    client.set(f"meta-{answered}", b"x", ex=30)
    try:
        for tag in (queued, held, answered):
            assert asyncio.run(_watch(redis_url, queue, _message(tag), f"meta-{tag}", 0.9)) == 0
        assert client.llen(queue) == 1
    finally:
        client.delete(queue, f"meta-{answered}")
        client.hdel("unacked", held)
