"""The decode scheduler on ONNX Runtime: shared decode steps, joining and leaving, streaming."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.tokenization import TextCodec
from genserve.workers.autoregressive.scheduler import DecodeScheduler
from genserve.workers.batching import CallLog
from genserve.workers.loops.text_generation import generate_text, score_text
from genserve.workers.runtime import LoadedModel, ModelCache
from tests.text.conftest import GPT_NAME
from tests.workers.autoregressive.test_streaming import RecordingSink


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


def test_a_request_past_the_context_fails_alone_as_internal(loaded, codec):
    """The gateway refuses prompt + max_new_tokens past the context (test_text_gateway); one
    that reaches the worker anyway fails alone, INTERNAL, and the request beside it is served."""
    context = loaded.manifest.config["block_size"]
    too_long = {"prompt_ids": [5] * context, "max_new_tokens": 4, "seed": 1}
    outcomes = generate_text(loaded, [too_long, request(codec, "The ", seed=1, max_new=4)], CallLog())
    assert outcomes[0] == {"ok": False, "code": "INTERNAL", "message": "worker error: ValueError"}
    assert outcomes[1]["ok"] and len(outcomes[1]["tokens"]) == 4


def test_score_text_matches_pytorch(loaded, codec, gpt_repo):
    """The worker's windowed log-likelihood on ONNX Runtime equals PyTorch's on the same ids."""
    from genserve.export.families.gpt.build import score_ids
    from genserve.export.core.publishing import load_published

    text = "Assert statements are a convenient way to insert debugging assertions into a program. " * 3
    ids = codec.encode(text)
    assert len(ids) > loaded.manifest.config["block_size"]  # several windows
    outcome = score_text(loaded, [{"ids": ids}], CallLog())[0]
    model = load_published(ModelRepository(gpt_repo), loaded.manifest).model
    assert outcome["num_tokens"] == len(ids) - 1
    assert outcome["log_likelihood"] == pytest.approx(-score_ids(model, ids), rel=1e-5)
    assert np.isfinite(outcome["log_likelihood"]) and outcome["log_likelihood"] < 0
