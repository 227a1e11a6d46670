"""Distributed mode: Celery task messages over Redis, results read asynchronously.

`CeleryBackend.run` publishes a Celery task to the model's queue with the batch's deadline as
its expiry (one asynchronous LPUSH, `TaskPublisher`), and waits for the Redis result backend's
publish of the result on the task's channel. Celery's own `AsyncResult.get()` would block a
thread and poll; here one pub/sub connection per gateway (`ResultListener`) resolves every
waiter, and a sweep re-reads stored results in case a publish was missed (reconnect, race).

Task ids start with the gateway's own random token, and the listener subscribes once, at its
start, to the pattern of its results (`PSUBSCRIBE celery-task-meta-<token>_*`): a request
costs the gateway one Redis command (the LPUSH) instead of a SUBSCRIBE it had to wait for
before publishing, an UNSUBSCRIBE and a DEL; read results are deleted a few at a time.

With plain redis:// URLs (the default) the LPUSH and the pattern subscription each have a
connection of their own on the gateway's wire (services/redis_wire.py, about half
redis-py's CPU per command and per result), named `genserve-publish-<token>` and
`genserve-results-<token>` in CLIENT LIST; everything else, and TLS or unix-socket URLs,
goes through redis-py's asyncio client.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from genserve.errors import BrokerUnavailableError, DeadlineExceededError, InternalError, QueueFullError
from genserve.protocol import RESULT_PREFIX, TASK_NAME, TaskPayload, consumers_key, senders_key
from genserve.services import redis_wire
from genserve.services.pubsub import Once, PubSubReader
from genserve.services.redis_wire import Commands, ResultSubscription, UncertainError
from genserve.services.redelivery import LostMessageWatch
from genserve.services.streams import RedisStreams
from genserve.settings import Settings

log = logging.getLogger(__name__)


class ResultListener(PubSubReader):
    """Resolves a future per awaited result key, from the result backend's publishes.

    Keys made by `new_task_id` are covered by the listener's one pattern subscription; any
    other key (`expect` takes every key) is subscribed on its own, as before.
    """

    SWEEP_S = 0.5  # how often results older than this are re-read with GET
    READ_TIMEOUT_S = SWEEP_S
    IGNORE_SUBSCRIBE_MESSAGES = True
    DELETE_AFTER_S = 0.02  # read results are deleted together, at most this late

    def __init__(self, client: Any, url: str | None = None) -> None:
        super().__init__(client, "gateway")
        self._waiters: dict[str, tuple[asyncio.Future, float]] = {}
        self._last_sweep = time.monotonic()
        self.token = uuid.uuid4().hex[:16]  # this gateway process's prefix of task ids
        self._ids = itertools.count()
        self._prefix = f"{RESULT_PREFIX}{self.token}_"
        self._to_delete: list[str] = []  # results read, deleted by the next `_delete_read`
        # With a plain redis:// URL the pattern is read on the gateway's own wire
        # (services/redis_wire.py: a result costs the event loop less than half as much);
        # other keys, and TLS or unix-socket URLs, go through redis-py's PubSub below.
        self._own: ResultSubscription | None = None
        if redis_wire.supported(url):
            self._own = ResultSubscription(url, self._prefix + "*", self._on_own, self._connection_lost, self._resweep,
                                           name=f"genserve-results-{self.token}")
        self._start_own = Once(self._own_and_sweeper)
        self._sweeper: asyncio.Task | None = None

    def new_task_id(self) -> str:
        """A task id whose result this listener receives without a subscription of its own."""
        return f"{self.token}_{next(self._ids):x}"

    async def _start(self) -> None:
        if self._own is None:
            await self._pubsub.psubscribe(self._prefix + "*")  # opens the connection, before any publish of ours
        await super()._start()

    async def _own_and_sweeper(self) -> None:
        """The wire's subscription and the sweep that redis-py's reader loop runs otherwise
        (started once, by `_start_own`)."""
        await self._own.start()  # type: ignore[union-attr]
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_every())

    async def expect(self, key: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiters[key] = (future, time.monotonic())
        if key.startswith(self._prefix):
            await (self._start_own() if self._own is not None else self.start())
        else:
            await self.subscribe(key)
        return future

    def _on_own(self, channel: bytes, data: bytes) -> None:
        self._resolve(channel.decode(), data)

    def _resweep(self) -> None:
        """Back after a reconnect: every waiting result is read again now (a publish made
        while the connection was away reached nobody)."""
        self._spawn(self._sweep_quietly(0.0))

    async def _sweep_every(self) -> None:
        while True:
            await asyncio.sleep(self.SWEEP_S)
            await self._sweep_quietly()

    async def _sweep_quietly(self, stale_s: float | None = None) -> None:
        try:
            await self._sweep(stale_s)
        except Exception as exc:  # Redis away: the subscription's reconnect reports it
            log.debug("re-reading waited-for results failed: %s", exc)

    def done(self, key: str) -> None:
        """Stop listening for `key` and delete the stored result (it has been read)."""
        self._waiters.pop(key, None)
        if not key.startswith(self._prefix):
            self.unsubscribe(key)
        if not self._to_delete:
            asyncio.get_running_loop().call_later(self.DELETE_AFTER_S, self._delete_read)
        self._to_delete.append(key)

    def _delete_read(self) -> None:
        keys, self._to_delete = self._to_delete, []
        if keys:
            self._spawn(self._client.delete(*keys))

    async def close(self) -> None:
        if self._to_delete:
            self._delete_read()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._own is not None:
            await self._own.close()
        await super().close()

    def _handle(self, message: dict[str, Any]) -> None:
        self._resolve(message["channel"].decode(), message["data"])

    async def _tick(self) -> None:
        if self._own is None and time.monotonic() - self._last_sweep >= self.SWEEP_S:  # else `_sweep_every`
            self._last_sweep = time.monotonic()
            await self._sweep()

    def _connection_lost(self, exc: Exception) -> None:
        """Redis stays away: every waiting call ends UNAVAILABLE now, not at its deadline
        (its task may still run once Redis is back; a seeded retry gives the same bytes)."""
        for future, _ in list(self._waiters.values()):
            if not future.done():
                future.set_exception(BrokerUnavailableError(
                    f"lost the connection to Redis while waiting for the result ({exc}); retry"))

    def _resolve(self, key: str, data: bytes) -> None:
        entry = self._waiters.get(key)
        if entry is not None and not entry[0].done():
            entry[0].set_result(data)

    async def _sweep(self, stale_s: float | None = None) -> None:
        """Re-read (MGET) the results waited for longer than `stale_s` (default SWEEP_S)."""
        now, stale_s = time.monotonic(), self.SWEEP_S if stale_s is None else stale_s
        stale = [k for k, (f, t) in self._waiters.items() if now - t > stale_s and not f.done()]
        if stale:
            for key, data in zip(stale, await self._client.mget(stale)):
                if data is not None:
                    self._resolve(key, data)


class TaskPublisher:
    """Publishes Celery task messages (protocol 2) with one asynchronous LPUSH.

    Celery's `send_task` is synchronous: each call blocks the event loop for a Redis round
    trip, which on a loaded machine waits for Redis to be scheduled. Here Celery itself builds
    the message (`app.amqp.as_task_v2`, kombu's serializer) and only the LPUSH is ours, on
    the gateway's asyncio Redis client: the same bytes kombu's Redis transport writes for an
    anonymous-exchange publish, so any Celery worker consumes them.
    """

    def __init__(self, app: Any, client: Any, wire: Commands | None = None) -> None:
        from kombu.serialization import dumps

        self._app = app
        self._client = client  # redis-py's asyncio client, used where `wire` is None
        self._wire = wire  # services/redis_wire.py: the LPUSH at half redis-py's cost
        self._dumps = dumps
        self._origin = f"genserve-gateway@{socket.gethostname()}:{os.getpid()}"

    def encode(self, task_id: str, queue: str, payload: TaskPayload, deadline: float) -> bytes:
        message = self._app.amqp.as_task_v2(
            task_id, TASK_NAME, args=[payload], kwargs={},
            expires=datetime.fromtimestamp(deadline, tz=timezone.utc),
            origin=self._origin, argsrepr=f"[<{len(payload['requests'])} requests for {payload['model']}>]",
            kwargsrepr="{}",
        )
        content_type, encoding, body = self._dumps(message.body, serializer="msgpack")
        properties = dict(message.properties)
        properties.update(
            delivery_mode=2, priority=0, body_encoding="base64", delivery_tag=uuid.uuid4().hex,
            delivery_info={"exchange": "", "routing_key": queue},
        )
        return json.dumps({
            "body": base64.b64encode(body).decode(), "content-encoding": encoding,
            "content-type": content_type, "headers": message.headers, "properties": properties,
        }).encode()

    async def publish(self, task_id: str, queue: str, payload: TaskPayload, deadline: float) -> bytes:
        message = self.encode(task_id, queue, payload, deadline)
        if self._wire is not None:
            await self._wire.call("LPUSH", queue, message)
        else:
            await self._client.lpush(queue, message)
        return message


class CeleryBackend:
    """Distributed mode: Celery tasks over Redis, results read asynchronously."""

    QUEUE_CHECK_S = 0.25  # how stale the cached queue depth (and consumer count) may be
    SENDER_S = 2.0  # a gateway counts as a sender to a queue this long after its last look

    def __init__(self, settings: Settings) -> None:
        import redis.asyncio
        from kombu.serialization import loads

        from genserve.workers.app import create_app

        self._redis = redis.asyncio.from_url(settings.backend_url)
        self._broker = redis.asyncio.from_url(settings.broker_url)
        self._listener = ResultListener(self._redis, settings.backend_url)
        self._pushes = Commands(settings.broker_url, name=f"genserve-publish-{self._listener.token}") \
            if redis_wire.supported(settings.broker_url) else None
        self._publisher = TaskPublisher(create_app(settings, with_results=False), self._broker, self._pushes)
        self._lost = LostMessageWatch(self._broker, self._redis)  # messages a dying worker lost
        self.streams = RedisStreams(self._redis)  # token streams of text generation
        self._loads = loads
        self._max_depth = settings.gateway.max_queue_depth
        self._depth: dict[str, tuple[int, float]] = {}
        self._consumers: dict[str, int] = {}  # queue -> worker processes consuming it, as last read
        self._senders: dict[str, int] = {}  # queue -> gateways sending to it lately, as last read

    async def run(self, ref: str, queue: str, op: str, requests: list[dict[str, Any]], deadline: float,
                  samples: int = 0) -> dict[str, Any]:
        task_id = self._listener.new_task_id()
        key = RESULT_PREFIX + task_id
        try:
            future = await self._listener.expect(key)
        except Exception as exc:
            raise BrokerUnavailableError(f"result backend unreachable: {exc}") from exc
        try:
            try:
                payload: TaskPayload = {"model": ref, "op": op, "requests": requests, "sent_at": time.time()}
                message = await self._publisher.publish(task_id, queue, payload, deadline)
            except UncertainError as exc:
                raise BrokerUnavailableError(
                    f"the connection to the broker dropped while enqueueing ({exc}): the task may still run "
                    "once, unanswered; retry (a seeded request gives the same bytes)") from exc
            except Exception as exc:
                raise BrokerUnavailableError(f"broker unreachable, nothing was enqueued: {exc}") from exc
            data = await self._lost.wait(future, queue, message, key, deadline)
        except asyncio.TimeoutError as exc:
            raise DeadlineExceededError("no result before the deadline") from exc
        finally:
            self._listener.done(key)
        return self._decode(data)

    def _decode(self, data: bytes) -> dict[str, Any]:
        meta = self._loads(data, content_type="application/x-msgpack", content_encoding="binary",
                          accept={"application/x-msgpack"})
        status = meta.get("status")
        if status == "SUCCESS":
            return meta["result"]
        if status == "REVOKED":
            raise DeadlineExceededError("the task expired in the queue before a worker reached it")
        exc = meta.get("result") or {}
        log.error("task failed in the worker: %s %s", exc.get("exc_type"), exc.get("exc_message"))
        raise InternalError(f"worker failed: {exc.get('exc_type', status)}")

    async def check_capacity(self, queue: str) -> None:
        depth, at = self._depth.get(queue, (0, 0.0))
        if time.monotonic() - at > self.QUEUE_CHECK_S:
            try:  # the depth, who consumes the queue (workers/failover.py beats it) and how
                # many gateways share those consumers (this one included), in one trip
                now = time.time()
                pipe = self._broker.pipeline(transaction=False)
                pipe.llen(queue)
                pipe.zrangebyscore(consumers_key(queue), now, "+inf")
                pipe.zadd(senders_key(queue), {self._listener.token: now + self.SENDER_S})
                pipe.zremrangebyscore(senders_key(queue), "-inf", now)
                pipe.zcard(senders_key(queue))
                depth, members, _, _, senders = await pipe.execute()
            except Exception as exc:
                raise BrokerUnavailableError(f"broker unreachable: {exc}") from exc
            self._depth[queue] = (depth, time.monotonic())
            self._consumers[queue] = sum(_processes(m) for m in members)
            self._senders[queue] = max(1, senders)
        if depth >= self._max_depth:
            raise QueueFullError(
                f"queue {queue} holds {depth} messages (limit {self._max_depth}); retry with backoff"
            )

    def consumers(self, queue: str) -> int:
        """This gateway's share of the worker processes consuming `queue`, as last read:
        all of them over the gateways sending to it (rounded up; 0: none known)."""
        return -(-self._consumers.get(queue, 0) // self._senders.get(queue, 1))

    def queue_depths(self) -> dict[str, int]:
        """Each queue's depth as last read (LLEN) by check_capacity, for the metrics."""
        return {queue: depth for queue, (depth, _) in self._depth.items()}

    async def ping(self) -> bool:
        """Whether the broker and the result backend both answer."""
        try:
            await asyncio.wait_for(asyncio.gather(self._broker.ping(), self._redis.ping()), timeout=2.0)
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self._listener.close()
        if self._pushes is not None:
            self._pushes.close()
        await self.streams.close()
        await self._redis.aclose()
        await self._broker.aclose()


def _processes(member: bytes) -> int:
    """"<holder>|<processes>" -> processes (a member written otherwise counts as one)."""
    try:
        return max(1, int(member.rsplit(b"|", 1)[1]))
    except (IndexError, ValueError):
        return 1
