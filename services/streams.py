"""The gateway's end of token streams: a subscription per streamed request.

The gateway subscribes to `genserve:stream:<id>` before it enqueues the request, so no chunk
can be published before someone listens; the worker's decode loop publishes chunks
(`{"start": index of the first token, "tokens": [[id, text, logprob], ...]}`) as tokens
become safe to send, and the final result still comes back through the task result.

- `RedisStreams` (distributed): one pub/sub connection per gateway for every stream, read by
  one task that routes each message to its request's queue. `subscribe` returns once Redis
  confirmed the subscription, because the worker takes "nobody received this" to mean the
  client went away.
- `LocalStreams` (embedded): the worker's code runs in this process and hands chunks over
  by callback from its decode thread; it is also the worker side's `StreamSink`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from genserve.services.pubsub import PubSubReader


class Subscription:
    """Chunks of one stream, in order; `close()` when done (the worker then stops sending)."""

    def __init__(self, channel: str, owner: Any) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None: a wake-up, no chunk
        self._owner = owner

    async def drain(self) -> list[Any]:
        """Wait for the next item, then take every item already queued behind it."""
        items = [await self.queue.get()]
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    def close(self) -> None:
        self._owner.unsubscribe(self.channel)


class LocalStreams:
    """Embedded mode: chunks go from the decode thread to the subscriber's event loop."""

    def __init__(self) -> None:
        self._subs: dict[str, tuple[asyncio.AbstractEventLoop, Subscription]] = {}
        self._lock = threading.Lock()

    async def subscribe(self, channel: str) -> Subscription:
        sub = Subscription(channel, self)
        with self._lock:
            self._subs[channel] = (asyncio.get_running_loop(), sub)
        return sub

    def unsubscribe(self, channel: str) -> None:
        with self._lock:
            self._subs.pop(channel, None)

    def publish(self, messages: list[tuple[str, dict[str, Any]]]) -> list[bool]:
        """Called from the decode thread; False where nobody subscribes any more."""
        delivered = []
        for channel, chunk in messages:
            with self._lock:
                entry = self._subs.get(channel)
            if entry is not None:
                loop, sub = entry
                loop.call_soon_threadsafe(sub.queue.put_nowait, chunk)
            delivered.append(entry is not None)
        return delivered

    async def close(self) -> None:
        with self._lock:
            self._subs.clear()


class RedisStreams(PubSubReader):
    """Distributed mode: one pub/sub connection routes every stream of this gateway."""

    SUBSCRIBE_TIMEOUT_S = 5.0

    def __init__(self, client: Any) -> None:
        import msgpack

        super().__init__(client, "gateway-streams")
        self._unpack = msgpack.unpackb
        self._subs: dict[str, Subscription] = {}
        self._confirmed: dict[str, asyncio.Future] = {}

    async def subscribe(self, channel: str) -> Subscription:  # type: ignore[override]
        from genserve.errors import BrokerUnavailableError

        sub = Subscription(channel, self)
        self._subs[channel] = sub
        confirmed = self._confirmed[channel] = asyncio.get_running_loop().create_future()
        try:
            await super().subscribe(channel)
            await asyncio.wait_for(confirmed, self.SUBSCRIBE_TIMEOUT_S)
        except Exception as exc:
            self.unsubscribe(channel)
            raise BrokerUnavailableError(f"cannot subscribe to the token stream: {exc!r}") from exc
        finally:
            self._confirmed.pop(channel, None)
        return sub

    def unsubscribe(self, channel: str) -> None:
        if self._subs.pop(channel, None) is not None:
            super().unsubscribe(channel)

    def _handle(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if message["type"] == "subscribe":
            future = self._confirmed.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
        elif message["type"] == "message" and channel in self._subs:
            self._subs[channel].queue.put_nowait(self._unpack(message["data"]))
