"""Streaming a generation's tokens while it runs: the sink that delivers chunks, and the
publisher thread that feeds it beside the decode loop.

After each step the newly safe tokens of every sequence with a stream channel go to a
`StreamPublisher` thread, which hands them to the `StreamSink` (Redis: one pipelined PUBLISH
per chunk on the request's channel, `genserve.protocol.stream_channel(id)`, to which the
gateway subscribed before enqueueing; embedded: an in-process callback) while the next step
runs, at most every `stream_interval_ms`. Newcomers' first tokens are published by the decode
thread itself, before the next step (time to first token: no thread hand-over, no interval),
and a finished stream's last chunk ends the publisher's wait (the request's latency: no
interval either). A PUBLISH nobody received means the client went away: the sequence is
dropped at the next step. The final result (all tokens, text, finish reason) returns through
Celery as usual, released only after the sequence's last chunk was published.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from genserve.protocol import StreamChunk

if TYPE_CHECKING:
    from genserve.workers.autoregressive.scheduler import Sequence

log = logging.getLogger(__name__)


class StreamSink(Protocol):
    """Where a streaming loop publishes chunks (`LoadedModel.streams`)."""

    def publish(self, messages: list[tuple[str, StreamChunk]]) -> list[bool]:
        """Deliver (channel, chunk) pairs in order; per message, whether anyone received it."""


class RedisStreamSink:
    """Worker side of streaming in the distributed mode: pipelined PUBLISH, msgpack chunks."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Any = None  # connected on first use, in the process that publishes

    def publish(self, messages: list[tuple[str, StreamChunk]]) -> list[bool]:
        import msgpack
        import redis

        if self._client is None:
            self._client = redis.Redis.from_url(self._url)
        pipe = self._client.pipeline(transaction=False)
        for channel, chunk in messages:
            pipe.publish(channel, msgpack.packb(chunk))
        return [n > 0 for n in pipe.execute()]


class StreamPublisher:
    """Hands chunks to the sink on its own thread, so the decode loop never waits on Redis.

    Whatever queued up while the previous publish was in flight goes out as one batch (one
    pipelined round trip, one chunk per sequence), so a loaded machine sends fewer, larger
    chunks instead of falling behind. A finished sequence's result is released here, after its last
    chunk, so a client never sees the end before the tokens. Sequences whose chunks reached
    nobody are collected for the decode loop to drop (`take_gone`).
    """

    def __init__(self, sink: StreamSink, interval_s: float = 0.0) -> None:
        self._sink = sink
        self._interval_s = interval_s  # at least this long between publishes
        self._urgent = False  # a first chunk or a finished stream is queued: publish without waiting
        self._items: list[tuple[Sequence, StreamChunk | None]] = []  # None: release the result
        self._gone: set[Sequence] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="genserve-stream", daemon=True)
        self._thread.start()

    def put(self, items: list[tuple[Sequence, StreamChunk | None]]) -> None:
        if items:
            with self._cond:
                self._items.extend(items)
                # a stream's first tokens and its end never wait for the interval: the time to
                # first token, and the request's whole latency (up to one interval longer)
                self._urgent = self._urgent or any(c is None or c["start"] == 0 for _, c in items)
                self._cond.notify()

    def publish_now(self, items: list[tuple[Sequence, StreamChunk]]) -> None:
        """Publish from the calling thread: newcomers' first tokens, without a thread hand-over.

        Safe beside the publisher thread: nothing of these sequences was queued before.
        """
        chunks = self._coalesce(items)
        if chunks:
            self._deliver(chunks)

    def _deliver(self, chunks: list[tuple[Sequence, StreamChunk]]) -> None:
        try:
            delivered = self._sink.publish([(seq.channel, chunk) for seq, chunk in chunks])
        except Exception:  # streaming is best effort: the final result carries every token
            log.warning("publishing %d stream chunks failed", len(chunks), exc_info=True)
            delivered = [True] * len(chunks)
        with self._cond:
            self._gone.update(seq for (seq, _), ok in zip(chunks, delivered) if not ok)

    def take_gone(self) -> set[Sequence]:
        with self._cond:
            gone, self._gone = self._gone, set()
        return gone

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        last = float("-inf")
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return
                pause = self._interval_s - (time.monotonic() - last)
            if pause > 0:
                with self._cond:  # the tokens of the next steps join this publish; a first chunk or an end ends the wait
                    self._cond.wait_for(lambda: self._urgent or self._closed, timeout=pause)
            with self._cond:
                items, self._items, self._urgent = self._items, [], False
            last = time.monotonic()
            chunks = self._coalesce(items)
            if chunks:
                self._deliver(chunks)
            for seq, chunk in items:
                if chunk is None:
                    seq.done.set()

    @staticmethod
    def _coalesce(items: list[tuple[Sequence, StreamChunk | None]]) -> list[tuple[Sequence, StreamChunk]]:
        """One chunk per sequence: the chunks that queued up while Redis was busy, joined."""
        merged: dict[Sequence, StreamChunk] = {}
        for seq, chunk in items:
            if chunk is None:
                continue
            if seq in merged:
                merged[seq]["tokens"].extend(chunk["tokens"])
            else:
                merged[seq] = {"start": chunk["start"], "tokens": list(chunk["tokens"])}
        return list(merged.items())
