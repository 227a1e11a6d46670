"""The gateway's own wire to Redis for the one message every batch waits for: its result.

Every batch ends with the result backend's PUBLISH reaching the gateway, on the request's
path. redis-py's asyncio `PubSub.get_message` costs about 140 us of the gateway's CPU per
message (its stream reader, a timeout per read, the message dict), against about 60 us for
an `asyncio.Protocol` that feeds the bytes to hiredis and hands each message to a callback in
the same event-loop turn (measured on a 2-core Intel Xeon, one process publishing 3,000
results of 3 KB to one pattern subscriber). `ResultSubscription` is that: one connection
per gateway with the result pattern subscribed, reconnecting by itself.

Plain `redis://` URLs only (password, user and database from the URL, as redis-py reads
them); TLS (`rediss://`) and unix sockets keep redis-py's reader (services/pubsub.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable
from urllib.parse import urlparse

import hiredis
from redis.asyncio.connection import parse_url

log = logging.getLogger(__name__)


def supported(url: str | None) -> bool:
    """Whether this wire speaks to `url` (plain TCP; TLS and unix sockets go through redis-py)."""
    return bool(url) and urlparse(url).scheme == "redis"


def pack(*args: Any) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Wire(asyncio.Protocol):
    """Replies answer the commands in order; pattern messages go to `on_message(channel, data)`."""

    def __init__(self, on_message: Callable[[bytes, bytes], None]) -> None:
        self._reader = hiredis.Reader()
        self._replies: deque[asyncio.Future] = deque()
        self._on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
                self._on_message(reply[2], reply[3])
            elif self._replies:
                future = self._replies.popleft()
                if not future.done():
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(ConnectionError(f"Redis refused: {reply}"))
                    else:
                        future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionError(f"connection to Redis lost: {exc or 'closed'}")
        while self._replies:
            future = self._replies.popleft()
            if not future.done():
                future.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(error)

    def call(self, *args: Any) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_exception(ConnectionError("not connected to Redis"))
            return future
        self._replies.append(future)
        self.transport.write(pack(*args))
        return future


class ResultSubscription:
    """One connection with `pattern` subscribed; `on_message(channel, data)` for each publish.

    When the connection drops it reconnects every RETRY_S and subscribes again; `on_up()`
    runs after each resubscription (the caller re-reads what was published meanwhile) and
    `on_down(exc)` once the connection has been away DOWN_GRACE_S, then after each failed
    attempt (the caller fails its waiters: Redis is gone).
    """

    RETRY_S = 0.2
    DOWN_GRACE_S = 1.0
    CONNECT_TIMEOUT_S = 5.0

    def __init__(self, url: str, pattern: str, on_message: Callable[[bytes, bytes], None],
                 on_down: Callable[[Exception], None], on_up: Callable[[], None], name: str = "") -> None:
        params = parse_url(url)
        self.name = name  # CLIENT SETNAME: what `redis-cli CLIENT LIST` shows for this connection
        self._host, self._port = params.get("host", "localhost"), int(params.get("port", 6379))
        self._username, self._password = params.get("username"), params.get("password")
        self._pattern = pattern
        self._on_message, self._on_down, self._on_up = on_message, on_down, on_up
        self._wire: _Wire | None = None
        self._keeper: asyncio.Task | None = None

    async def start(self) -> None:
        """Connect and subscribe now (errors raise); then keep the subscription up."""
        self._wire = await self._connect()
        self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _connect(self) -> _Wire:
        loop = asyncio.get_running_loop()
        _, wire = await asyncio.wait_for(
            loop.create_connection(lambda: _Wire(self._on_message), self._host, self._port),
            self.CONNECT_TIMEOUT_S)
        try:
            if self._password:
                auth = (self._username, self._password) if self._username else (self._password,)
                await asyncio.wait_for(wire.call("AUTH", *auth), self.CONNECT_TIMEOUT_S)
            if self.name:
                await asyncio.wait_for(wire.call("CLIENT", "SETNAME", self.name), self.CONNECT_TIMEOUT_S)
            confirmation = await asyncio.wait_for(wire.call("PSUBSCRIBE", self._pattern), self.CONNECT_TIMEOUT_S)
            if not (isinstance(confirmation, list) and confirmation and confirmation[0] == b"psubscribe"):
                raise ConnectionError(f"PSUBSCRIBE answered {confirmation!r}")
        except BaseException:
            if wire.transport is not None:
                wire.transport.close()
            raise
        return wire

    async def _keep(self) -> None:
        while True:
            assert self._wire is not None
            lost = await self._wire.closed
            log.warning("result subscription: %s; reconnecting", lost)
            down_since = time.monotonic()
            while True:
                await asyncio.sleep(self.RETRY_S)
                try:
                    self._wire = await self._connect()
                    break
                except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                    if time.monotonic() - down_since >= self.DOWN_GRACE_S:
                        self._on_down(exc)
            log.warning("result subscription: back after %.1f s", time.monotonic() - down_since)
            self._on_up()

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._wire is not None and self._wire.transport is not None:
            self._wire.transport.close()
