"""One Redis pub/sub connection per gateway for many channels, read by one task.

Both the result listener (services/dispatch.py) and the token streams (services/streams.py)
subscribe a channel per request on a shared connection. redis-py's asyncio `PubSub` opens its
connection on the first command and is not safe against two first commands at once: both see
no connection and each opens one, and the channels subscribed on the one that gets replaced
are never read. So the connection is opened exactly once, by `start()` (all first callers wait
for the same start), before any per-request subscription is sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)


class Once:
    """An asynchronous start run once: concurrent first callers share it, and after a failure
    the next caller tries again."""

    def __init__(self, start: Callable[[], Awaitable[None]]) -> None:
        self._start = start
        self._future: asyncio.Future | None = None

    async def __call__(self) -> None:
        if self._future is None:
            self._future = asyncio.ensure_future(self._start())
        try:
            await asyncio.shield(self._future)
        except Exception:
            self._future = None
            raise


class PubSubReader:
    """Subclasses route messages (`_handle`) and may do periodic work (`_tick`)."""

    READ_TIMEOUT_S = 1.0  # longest wait for a message before `_tick` runs
    # A reconnect within this long loses nothing (the subscriptions come back, and what was
    # published meanwhile is re-read); past it, waiters are told (`_connection_lost`).
    DOWN_GRACE_S = 1.0
    IGNORE_SUBSCRIBE_MESSAGES = False

    def __init__(self, client: Any, name: str) -> None:
        self._client = client
        self._pubsub = client.pubsub()
        # A channel nobody publishes to keeps the connection subscribed between requests.
        self._idle_channel = f"genserve:{name}:{uuid.uuid4().hex}"
        self._start_once = Once(self._start)
        self._task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._down_since: float | None = None  # when reading first failed, while it still fails

    async def start(self) -> None:
        """Open the connection and start reading, once; concurrent callers share the start."""
        await self._start_once()

    async def _start(self) -> None:
        await self._pubsub.subscribe(self._idle_channel)  # opens the one connection
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def subscribe(self, channel: str) -> None:
        await self.start()
        await self._pubsub.subscribe(channel)

    def unsubscribe(self, channel: str) -> None:
        """In the background: the caller has stopped waiting already."""
        self._spawn(self._pubsub.unsubscribe(channel))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=self.IGNORE_SUBSCRIBE_MESSAGES,
                                                         timeout=self.READ_TIMEOUT_S)
                if message is not None:
                    self._handle(message)
                self._down_since = None
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: redis-py resubscribes on reconnect
                log.warning("%s: %s; retrying", type(self).__name__, exc)
                now = time.monotonic()
                if self._down_since is None:
                    self._down_since = now
                elif now - self._down_since >= self.DOWN_GRACE_S:
                    self._connection_lost(exc)
                await asyncio.sleep(0.2)

    def _handle(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def _connection_lost(self, exc: Exception) -> None:
        """The connection has been down DOWN_GRACE_S (each failed reconnect calls this again)."""
        return None

    async def _tick(self) -> None:
        return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._pubsub.aclose()
