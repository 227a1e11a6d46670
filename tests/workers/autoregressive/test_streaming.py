"""The stream publisher: chunks reach the sink in order, joined per interval, never delaying a
first chunk or an end."""

from __future__ import annotations

import threading
import time
from typing import Any

from genserve.workers.autoregressive.scheduler import Sequence
from genserve.workers.autoregressive.streaming import StreamPublisher


class RecordingSink:
    """Collects chunks per channel; `listening=False` plays a client that went away."""

    def __init__(self, listening: bool = True) -> None:
        self.chunks: dict[str, list[dict[str, Any]]] = {}
        self.listening = listening
        self.lock = threading.Lock()

    def publish(self, messages: list[tuple[str, dict[str, Any]]]) -> list[bool]:
        with self.lock:
            for channel, chunk in messages:
                self.chunks.setdefault(channel, []).append(chunk)
        return [self.listening] * len(messages)


def test_publisher_interval_joins_chunks_but_never_delays_a_first_chunk_or_an_end():
    """With an interval, chunks queued meanwhile go out as one per stream; a stream's first
    chunk does not wait, nor does its end (the request's latency)."""
    def arrived(channel: str, count: int, within_s: float) -> None:
        started = time.monotonic()
        while len(sink.chunks.get(channel, [])) < count:
            assert time.monotonic() - started < within_s, f"chunk {count} of {channel} waited for the interval"
            time.sleep(0.005)

    sink = RecordingSink()
    publisher = StreamPublisher(sink, interval_s=2.0)
    running = Sequence([1], None, 10, None, None, None, False, "running", 0.0)
    new = Sequence([1], None, 10, None, None, None, False, "new", 0.0)
    try:
        publisher.put([(running, {"start": 7, "tokens": [[5, "x", 0.0]]})])
        arrived("running", 1, 1.0)  # nothing published before: no wait
        publisher.put([(new, {"start": 0, "tokens": [[9, "n", 0.0]]})])
        arrived("new", 1, 1.0)  # a first chunk inside the interval goes at once
        for i in range(8, 11):  # three steps' tokens of the running stream inside one interval
            publisher.put([(running, {"start": i, "tokens": [[i, "y", 0.0]]})])
        publisher.put([(running, None)])  # finished: the result is released after its last chunk
        assert running.done.wait(1.0), "a finished stream waited for the interval"
    finally:
        publisher.close()
    assert [c["start"] for c in sink.chunks["running"]] == [7, 8]
    assert [t[0] for t in sink.chunks["running"][1]["tokens"]] == [8, 9, 10]
