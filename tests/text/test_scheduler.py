"""The decode scheduler on ONNX Runtime: shared decode steps, joining and leaving, streaming."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.workers.batching import BatchStats
from genserve.workers.generation import DecodeScheduler, generate_text, score_text
from genserve.workers.runtime import LoadedModel, ModelCache
from genserve.tokenization import TextCodec
from tests.text.conftest import GPT_NAME


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


@pytest.fixture(scope="module")
def loaded(gpt_repo: Path) -> LoadedModel:
    cache = ModelCache(ModelRepository(gpt_repo), WorkerSettings(intra_op_threads=1))
    return cache.get(f"{GPT_NAME}:1")


@pytest.fixture(scope="module")
def codec(loaded: LoadedModel) -> TextCodec:
    return TextCodec.load(loaded.directory, loaded.manifest)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def scheduler(loaded: LoadedModel, codec: TextCodec, sink: RecordingSink) -> Iterator[DecodeScheduler]:
    running = DecodeScheduler(loaded, codec, sink)
    yield running
    running.close()


def request(codec: TextCodec, prompt: str, seed: int, max_new: int = 20, **extra: Any) -> dict[str, Any]:
    return {"prompt_ids": codec.encode(prompt), "max_new_tokens": max_new, "seed": seed,
            "temperature": 0.9, **extra}


def alone(loaded: LoadedModel, codec: TextCodec, req: dict[str, Any]) -> dict[str, Any]:
    solo = DecodeScheduler(loaded, codec, None)
    try:
        return solo.submit({**req, "stream": None}).result(30)
    finally:
        solo.close()


def test_concurrent_sequences_share_steps_and_match_running_alone(scheduler, loaded, codec):
    """Six ragged requests decode together, each exactly as it would alone."""
    prompts = ["The ", "A list comprehension consists of", "", "If the", "x", "Assert statements are"]
    reqs = [request(codec, p, seed=i, max_new=10 + 5 * i) for i, p in enumerate(prompts)]
    seqs = [scheduler.submit(r) for r in reqs]
    together = [s.result(30) for s in seqs]
    assert all(o["ok"] for o in together)
    assert [o["text"] for o in together] == [alone(loaded, codec, r)["text"] for r in reqs]
    assert max(scheduler.steps) == 6 and scheduler.steps[-1] == 1  # all shared, the longest finished alone


class HeldSink(RecordingSink):
    """Holds the first publish of a channel until released. A stream's first tokens are
    published by the decode thread itself, so this pauses the decode loop at a known point
    (a fast machine generates 90 tokens before a test thread could look)."""

    def __init__(self, channel: str) -> None:
        super().__init__()
        self.channel, self.reached, self.release = channel, threading.Event(), threading.Event()

    def publish(self, messages: list[tuple[str, dict[str, Any]]]) -> list[bool]:
        if any(c == self.channel for c, _ in messages) and not self.reached.is_set():
            self.reached.set()
            self.release.wait(30)
        return super().publish(messages)


def test_a_request_joins_a_running_batch_and_leaves_when_done(loaded, codec):
    """A newcomer joins between steps of a long generation and leaves before it ends."""
    sink = HeldSink("long")
    scheduler = DecodeScheduler(loaded, codec, sink)
    try:
        long = scheduler.submit({**request(codec, "The ", seed=1, max_new=90), "stream": "long"})
        assert sink.reached.wait(30)  # its first token is being streamed; the loop waits for it
        short_req = request(codec, "If the", seed=2, max_new=8)
        pending = scheduler.submit(short_req)
        sink.release.set()
        short = pending.result(30)
        assert not long.done.is_set()  # the short one finished first, inside the long one's run
        assert long.result(30)["ok"] and short == alone(loaded, codec, short_req)
    finally:
        sink.release.set()
        scheduler.close()
    steps = scheduler.steps
    assert steps[0] == 1 and 2 in steps and steps[-1] == 1
    assert steps.count(2) == 7  # the newcomer's prefill gave token 1; 7 shared steps gave the rest


def test_stream_chunks_are_in_order_and_add_up_to_the_result(scheduler, sink, codec):
    """Chunk starts are contiguous and their tokens are exactly the final result's tokens."""
    outcome = scheduler.submit({**request(codec, "The ", seed=3, max_new=30, logprobs=True), "stream": "s"}).result(30)
    starts, tokens = [], []
    for chunk in sink.chunks["s"]:
        starts.append(chunk["start"])
        assert chunk["start"] == len(tokens)
        tokens += [list(t) for t in chunk["tokens"]]
    assert tokens == outcome["tokens"] and "".join(t[1] for t in tokens) == outcome["text"]
    assert len(starts) > 1 and all(t[2] <= 0.0 for t in tokens)


def test_a_stream_nobody_listens_to_is_dropped(loaded, codec):
    """When a chunk reaches nobody the sequence stops at once instead of generating on."""
    gone = RecordingSink(listening=False)
    scheduler = DecodeScheduler(loaded, codec, gone)
    try:
        outcome = scheduler.submit({**request(codec, "The ", seed=4, max_new=60), "stream": "gone"}).result(30)
    finally:
        scheduler.close()
    assert not outcome["ok"] and "stopped listening" in outcome["message"]
    assert len(scheduler.steps) < 30  # learnt within a few steps (the publisher runs beside the loop)


def test_stop_string_ends_generation_before_it(scheduler, loaded, codec):
    """A stop string taken from a greedy output cuts that output right before it."""
    base = request(codec, "The ", seed=0, max_new=40, temperature=0.0)
    text = alone(loaded, codec, base)["text"]
    stop = text[10:13]
    cut = text[: text.index(stop)]
    outcome = scheduler.submit({**base, "stop": [stop]}).result(30)
    assert outcome["finish_reason"] == "stop" and outcome["text"] == cut
    assert "".join(t[1] for t in outcome["tokens"]) == cut


def test_a_bad_request_fails_alone(loaded, codec):
    """A prompt longer than the context fails; the request beside it is served."""
    context = loaded.manifest.config["block_size"]
    too_long = {"prompt_ids": [5] * context, "max_new_tokens": 4, "seed": 1}
    outcomes = generate_text(loaded, [too_long, request(codec, "The ", seed=1, max_new=4)], BatchStats())
    assert outcomes[0]["code"] == "INVALID_ARGUMENT" and f"<= {context}" in outcomes[0]["message"]
    assert outcomes[1]["ok"] and len(outcomes[1]["tokens"]) == 4


def test_score_text_matches_pytorch(loaded, codec, gpt_repo):
    """The worker's windowed log-likelihood on ONNX Runtime equals PyTorch's on the same ids."""
    from genserve.export.families.gpt.build import score_ids
    from genserve.export.core.publishing import load_published

    text = "Assert statements are a convenient way to insert debugging assertions into a program. " * 3
    ids = codec.encode(text)
    assert len(ids) > loaded.manifest.config["block_size"]  # several windows
    outcome = score_text(loaded, [{"ids": ids}], BatchStats())[0]
    model = load_published(ModelRepository(gpt_repo), loaded.manifest).model
    assert outcome["num_tokens"] == len(ids) - 1
    assert outcome["log_likelihood"] == pytest.approx(-score_ids(model, ids), rel=1e-5)
    assert np.isfinite(outcome["log_likelihood"]) and outcome["log_likelihood"] < 0


def test_publisher_interval_joins_chunks_but_never_delays_a_first_chunk_or_an_end():
    """With an interval, chunks queued meanwhile go out as one per stream; a stream's first
    chunk does not wait, nor does its end (the request's latency)."""
    from genserve.workers.generation import Sequence, StreamPublisher

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


def test_decode_batch_buffers_shrink_with_the_batch():
    """Every step reads the whole capacity: it must follow the live rows, not the largest batch ever."""
    from genserve.workers.generation import CacheSpec, DecodeBatch, Sequence

    spec = CacheSpec(layers=1, heads=2, head_dim=4)
    batch = DecodeBatch(spec, max_rows=4)

    def prefilled(length: int, value: float) -> list[np.ndarray]:
        return [np.full((1, 2, length, 4), value, np.float32)] * 2

    def step() -> None:
        batch.append([np.full((len(batch.rows), 2, 1, 4), 9.0, np.float32)] * 2)

    rows = [Sequence([1], None, 10, None, None, None, False, None, 0.0) for _ in range(2)]
    batch.add(rows[0], prefilled(3, 1.0))
    for _ in range(100):
        step()
    batch.add(rows[1], prefilled(2, 2.0))  # joins late: right-aligned at column 103
    step()
    assert batch.width == 104 and batch.mask.shape[1] == 128
    batch.keep([False, True])  # the long row leaves: only the late row's 3 columns stay
    assert batch.width == 3 and batch.mask.shape[1] == DecodeBatch.BLOCK
    assert batch.mask[0, :3].tolist() == [1, 1, 1] and not batch.mask[0, 3:].any() and not batch.mask[1:].any()
    assert batch.cache[0][0, 0, :3, 0].tolist() == [2.0, 2.0, 9.0]  # its keys moved with it
    batch.keep([False])
    assert batch.width == 0 and batch.mask.shape[1] == 0 and batch.cache[0].shape[2] == 0


@pytest.mark.parametrize("seed", range(4))
def test_decode_batch_keeps_every_row_s_cache_through_random_joins_steps_and_leaves(seed):
    """Against a plain list per row: whatever joins, steps and leaves happen, each live row's
    unmasked columns hold exactly its own keys and values, in order, ending at `width`, and the
    buffers have room for the next column and no more rows than max_rows."""
    from genserve.workers.generation import CacheSpec, DecodeBatch, Sequence

    rng = np.random.default_rng(seed)
    spec = CacheSpec(layers=2, heads=2, head_dim=3)
    batch = DecodeBatch(spec, max_rows=6)
    reference: list[list[np.ndarray]] = []  # per row: its (2 * layers, H, D) columns
    serial = iter(range(1, 10**6))

    def column() -> np.ndarray:
        return np.full((2 * spec.layers, spec.heads, spec.head_dim), next(serial), np.float32)

    for _ in range(300):
        action = rng.random()
        if action < 0.15 and len(batch.rows) < 6:  # a newcomer, prefilled alone
            columns = [column() for _ in range(int(rng.integers(1, 60)))]
            cache = [np.stack([c[i] for c in columns], axis=1)[None] for i in range(2 * spec.layers)]
            batch.add(Sequence([1], None, 10, None, None, None, False, None, 0.0), cache)
            reference.append(columns)
        elif action < 0.25 and batch.rows:  # some rows finish
            alive = (rng.random(len(batch.rows)) < 0.7).tolist()
            batch.keep(alive)
            reference = [r for r, keep in zip(reference, alive) if keep]
        elif batch.rows:  # a decode step
            new = [column() for _ in batch.rows]
            batch.append([np.stack([c[i] for c in new])[:, :, None] for i in range(2 * spec.layers)])
            for columns, c in zip(reference, new):
                columns.append(c)
        n = len(batch.rows)
        assert batch.mask.shape[0] <= 6 and (n == 0 or batch.width < batch.mask.shape[1])
        for row, columns in enumerate(reference):
            used = np.flatnonzero(batch.mask[row])
            assert len(used) == len(columns) and (not columns or used[-1] == batch.width - 1)
            assert used.tolist() == list(range(batch.width - len(columns), batch.width))  # contiguous, right-aligned
            for i, buffer in enumerate(batch.cache):
                np.testing.assert_array_equal(buffer[row, :, used], np.stack([c[i] for c in columns]))
        assert not batch.mask[n:].any()
