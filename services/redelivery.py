"""The gateway's watch for task messages that a dying worker took and lost.

kombu's Redis transport takes a message with BRPOP and only then records it in the `unacked`
hash: a worker SIGKILLed between the two has removed the message from its queue without
leaving it anywhere a restore could find it, and the caller would wait for its deadline
(tests/text/test_text_faults.py hit this). Workers' failover (workers/failover.py) and the
visibility timeout cover everything in `unacked`; this covers that gap.

While the gateway waits for a result it looks, every `INTERVAL_S` once the message is older
than `CHECK_AFTER_S`, for the message in one MULTI snapshot of the broker (still in its queue:
LPOS; taken and held: HEXISTS unacked) and then for its stored result (a worker stores the
result before it acks, so "acked" always shows as "result present"). Absent everywhere in two
consecutive looks, a second apart, it is lost: the same bytes (same task id and delivery tag)
are pushed back onto the queue's consuming end. Between BRPOP and the unacked HSET a live
worker spends well under a millisecond; one stalled there for seconds (its GIL held by a
model load) would make the message look lost, and then both copies arrive somewhere: each
worker claims the message's owner entry as it receives it (workers/failover.py `own`), and
the copy that finds another live worker owning it is skipped, so the work still runs once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

UNACKED = "unacked"  # kombu's default `unacked_key`


class LostMessageWatch:
    """Waits for a task's result and republishes its message if a worker lost it."""

    CHECK_AFTER_S = 2.0  # younger messages are not looked for (nearly all finish before)
    INTERVAL_S = 1.0  # between looks; two absent looks in a row mean lost

    def __init__(self, broker: Any, results: Any) -> None:
        self._broker = broker
        self._results = results
        self.republished = 0  # how many messages were found lost and sent again

    async def wait(self, future: asyncio.Future, queue: str, message: bytes, result_key: str,
                   deadline: float) -> Any:
        """The future's result; asyncio.TimeoutError at the deadline.

        The caller awaits the future itself, nothing wrapped around it (each wrapper, a
        `wait_for` or a `shield`, costs every answer another turn of the event loop): a timer
        fails it at the deadline, and another starts the look-out for a lost message in the
        background once the message is `CHECK_AFTER_S` old."""
        loop = asyncio.get_running_loop()

        def expire() -> None:
            if not future.done():
                future.set_exception(asyncio.TimeoutError())

        watching: list[asyncio.Task] = []

        def watch() -> None:
            if not future.done():
                watching.append(loop.create_task(self._watch(future, queue, message, result_key)))

        timers = [loop.call_later(max(0.0, deadline - time.time()), expire),
                  loop.call_later(self.CHECK_AFTER_S, watch)]
        try:
            return await future
        finally:
            for timer in timers:
                timer.cancel()
            for task in watching:
                task.cancel()

    async def _watch(self, future: asyncio.Future, queue: str, message: bytes, result_key: str) -> None:
        """Until the future is done: look every INTERVAL_S; absent twice in a row, send again."""
        absent = 0
        while not future.done():
            try:
                absent = absent + 1 if not await self._present(queue, message, result_key) else 0
                if absent >= 2 and not future.done():
                    await self._broker.rpush(queue, message)  # the consuming end: taken next
                    self.republished += 1
                    absent = 0
                    log.warning("task message %s was lost by a worker (in no queue, not held, no "
                                "result): sent again to %s", result_key, queue)
            except Exception as exc:  # the broker away: the deadline or a reconnect decides
                log.debug("looking for message %s failed: %s", result_key, exc)
            await asyncio.sleep(self.INTERVAL_S)

    async def _present(self, queue: str, message: bytes, result_key: str) -> bool:
        tag = json.loads(message)["properties"]["delivery_tag"]
        async with self._broker.pipeline(transaction=True) as pipe:
            pipe.lpos(queue, message)
            pipe.hexists(UNACKED, tag)
            queued, held = await pipe.execute()
        return queued is not None or bool(held) or bool(await self._results.exists(result_key))
