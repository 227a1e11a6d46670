"""The gateway's own wire to Redis for what every batch does: its LPUSH and its result.

Every batch costs the gateway one LPUSH (the task message) and one pattern message (the
result backend's PUBLISH, on the request's path). Through redis-py's asyncio client these
cost about 110 us (`lpush`) and 140 us (`PubSub.get_message`) of the gateway's CPU each:
a connection pool, a retry wrapper, a stream reader and a timeout per read. An
`asyncio.Protocol` that writes RESP itself and feeds the replies to hiredis, handing each
to its waiter or callback in the same event-loop turn, costs about 55 and 60 us (measured on
a 2-core Intel Xeon: 5,000 LPUSHes of 1 KB one after another; 3,000 results of 3 KB from
another process to one pattern subscriber). Here:

- `ResultSubscription`: one connection per gateway with the result pattern subscribed,
  reconnecting by itself;
- `Commands`: one connection for the task LPUSH, pipelined (replies matched in order),
  connected again on the next call after a loss.

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


class ReplyError(Exception):
    """Redis answered the command with an error (a wrong password, a wrong type)."""


class NotSent(ConnectionError):
    """No connection: the command was not written."""


class UncertainError(ConnectionError):
    """The connection dropped after the command was written: Redis may have run it."""


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
                        future.set_exception(ReplyError(str(reply)))
                    else:
                        future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        while self._replies:
            future = self._replies.popleft()
            if not future.done():
                future.set_exception(UncertainError(f"connection to Redis lost before the reply: {exc or 'closed'}"))
        if not self.closed.done():
            self.closed.set_result(ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and not self.closed.done()

    def call(self, *args: Any) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if not self.usable:
            future.set_exception(NotSent("not connected to Redis"))
            return future
        self._replies.append(future)
        self.transport.write(pack(*args))  # type: ignore[union-attr]
        return future


class _Endpoint:
    """Where a URL points, and how to open a connection there: AUTH (user and password from
    the URL), SELECT (its database, where asked) and CLIENT SETNAME, pipelined."""

    CONNECT_TIMEOUT_S = 5.0

    def __init__(self, url: str) -> None:
        params = parse_url(url)
        self.host, self.port = params.get("host", "localhost"), int(params.get("port", 6379))
        self.username, self.password = params.get("username"), params.get("password")
        self.db = int(params.get("db", 0) or 0)

    async def open(self, on_message: Callable[[bytes, bytes], None], name: str, select_db: bool,
                   then: tuple[Any, ...] = ()) -> tuple[_Wire, Any]:
        """A connected wire and the reply to `then` (a last command, e.g. PSUBSCRIBE), if any."""
        loop = asyncio.get_running_loop()
        _, wire = await asyncio.wait_for(loop.create_connection(lambda: _Wire(on_message), self.host, self.port),
                                         self.CONNECT_TIMEOUT_S)
        try:
            steps = []
            if self.password:
                steps.append(wire.call("AUTH", *((self.username,) if self.username else ()), self.password))
            if select_db and self.db:
                steps.append(wire.call("SELECT", self.db))
            if name:
                steps.append(wire.call("CLIENT", "SETNAME", name))
            if then:
                steps.append(wire.call(*then))
            replies = await asyncio.wait_for(asyncio.gather(*steps), self.CONNECT_TIMEOUT_S)
        except BaseException:
            if wire.transport is not None:
                wire.transport.close()
            raise
        return wire, (replies[-1] if then else None)


class ResultSubscription:
    """One connection with `pattern` subscribed; `on_message(channel, data)` for each publish.

    When the connection drops it reconnects every RETRY_S and subscribes again; `on_up()`
    runs after each resubscription (the caller re-reads what was published meanwhile) and
    `on_down(exc)` once the connection has been away DOWN_GRACE_S, then after each failed
    attempt (the caller fails its waiters: Redis is gone).
    """

    RETRY_S = 0.2
    DOWN_GRACE_S = 1.0

    def __init__(self, url: str, pattern: str, on_message: Callable[[bytes, bytes], None],
                 on_down: Callable[[Exception], None], on_up: Callable[[], None], name: str = "") -> None:
        self._endpoint = _Endpoint(url)
        self.name = name  # CLIENT SETNAME: what `redis-cli CLIENT LIST` shows for this connection
        self._pattern = pattern
        self._on_message, self._on_down, self._on_up = on_message, on_down, on_up
        self._wire: _Wire | None = None
        self._keeper: asyncio.Task | None = None

    async def start(self) -> None:
        """Connect and subscribe now (errors raise); then keep the subscription up."""
        self._wire = await self._connect()
        self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _connect(self) -> _Wire:
        wire, confirmation = await self._endpoint.open(self._on_message, self.name, select_db=False,
                                                       then=("PSUBSCRIBE", self._pattern))
        if not (isinstance(confirmation, list) and confirmation and confirmation[0] == b"psubscribe"):
            if wire.transport is not None:
                wire.transport.close()
            raise ConnectionError(f"PSUBSCRIBE answered {confirmation!r}")
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
                except (OSError, ConnectionError, ReplyError, asyncio.TimeoutError) as exc:
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


class Commands:
    """Commands on one connection, pipelined: `await call("LPUSH", key, value)`.

    Connects on the first call (AUTH, SELECT and CLIENT SETNAME from the URL and `name`) and
    again on the first call after the connection is lost. A call that cannot connect raises
    ConnectionError (nothing was sent); one that finds its connection gone (NotSent: nothing
    written) is sent once more on a new connection; one whose connection drops before its
    reply raises UncertainError (the command may have run) and is not sent again: an LPUSH
    sent twice would queue the task twice. An error reply raises ReplyError.
    """

    def __init__(self, url: str, name: str = "") -> None:
        self._endpoint = _Endpoint(url)
        self.name = name
        self._wire: _Wire | None = None
        self._connecting: asyncio.Future | None = None

    async def call(self, *args: Any) -> Any:
        for attempt in range(2):
            wire = self._wire
            if wire is None or not wire.usable:
                wire = await self._connected()
            try:
                return await wire.call(*args)
            except NotSent:  # the connection was found gone: nothing written, so once more
                self._wire = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _connected(self) -> _Wire:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._endpoint.open(_no_messages, self.name, select_db=True))
        try:
            self._wire, _ = await asyncio.shield(self._connecting)
        except (OSError, asyncio.TimeoutError) as exc:
            endpoint = self._endpoint
            raise ConnectionError(f"cannot connect to Redis at {endpoint.host}:{endpoint.port}: {exc}") from exc
        return self._wire

    def close(self) -> None:
        if self._wire is not None and self._wire.transport is not None:
            self._wire.transport.close()


def _no_messages(channel: bytes, data: bytes) -> None:
    raise AssertionError("a command connection received a pub/sub message")
