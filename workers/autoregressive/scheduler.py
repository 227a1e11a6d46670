"""The decode scheduler: iteration-level batching of text generation on ONNX Runtime.

One `DecodeScheduler` thread per model version per worker process owns the decoding. Celery
tasks (the `threads` pool, so many run at once in one process) submit a sequence and block
until it finishes; the scheduler interleaves all of them:

    loop:
        admit waiting sequences while the batch has room (max_batch_size rows):
            prefill the prompt alone (batch 1, empty past), sample its first token,
            write its keys/values into the batch's cache buffers (cache.DecodeBatch), left-padded
        one decode step for every row: input_ids (B, 1), position_ids (B, 1), mask (B, P+1);
          the step's new keys/values are written in place at the next column
        sample each row's next token (its own seed, its own settings), stream what is safe
          (streaming.StreamPublisher)
        drop finished rows (length, stop string, end-of-text, deadline, nobody listening)
          and the cache columns no remaining row uses

So a request arriving mid-generation waits at most one step plus its own prefill, and a
finished one frees its row at once; nobody queues behind a long generation.

Requests arrive validated by the gateway (prompt + max_new_tokens within the context); a
request that breaks that is refused alone, as an internal error, before it can fail a step
shared with others.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genserve.errors import DeadlineExceededError
from genserve.protocol import Outcome, StreamChunk
from genserve.tokenization import TextCodec
from genserve.workers import metrics
from genserve.workers.autoregressive.cache import CacheSpec, DecodeBatch, prefill_feeds
from genserve.workers.autoregressive.sampling import (
    SamplingParams,
    TextState,
    Workspace,
    next_token,
    next_tokens,
)
from genserve.workers.autoregressive.streaming import StreamPublisher, StreamSink
from genserve.workers.batching import failure
from genserve.workers.runtime import LoadedModel

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Sequence:
    """One generation request inside the scheduler."""

    prompt: list[int]
    params: SamplingParams
    max_new_tokens: int
    rng: np.random.Generator
    text: TextState
    seen: np.ndarray  # (V,) bool: tokens of prompt and output, for the repetition penalty
    logprobs: bool
    channel: str | None  # stream channel; None: CompleteText
    deadline: float  # wall clock
    last: int = -1  # token to feed at the next step
    length: int = 0  # tokens in this row's cache (= position of `last`)
    generated: int = 0
    finish_reason: str = ""
    outcome: Outcome | None = None
    submitted: float = field(default_factory=time.monotonic)  # for the time to first token
    done: threading.Event = field(default_factory=threading.Event)

    def result(self, timeout: float | None = None) -> Outcome:
        if not self.done.wait(timeout):
            return failure(DeadlineExceededError("generation did not finish before the deadline"))
        return self.outcome  # type: ignore[return-value]


class DecodeScheduler:
    """Owns one model's decoding in this process; `submit` from any thread, `result` to wait."""

    def __init__(self, loaded: LoadedModel, codec: TextCodec, sink: StreamSink | None) -> None:
        config = loaded.manifest.config
        self.model = loaded.onnx
        self.codec = codec
        interval = loaded.settings.stream_interval_ms / 1000 if loaded.settings is not None else 0.0
        self.publisher = StreamPublisher(sink, interval) if sink is not None else None
        self.context = int(config["block_size"])
        self.max_batch = max(1, loaded.max_batch_size)
        self.spec = CacheSpec.of(config)
        self.batch = DecodeBatch(self.spec, self.max_batch)
        self.steps: list[int] = []  # rows in each decode step (benchmarks, tests)
        self.name = loaded.manifest.name  # the model's metrics label
        self.workspace = Workspace()  # the sampler's buffers, reused step after step
        self._waiting: list[Sequence] = []
        self._finished: list[Sequence] = []  # done generating, result not handed out yet
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="genserve-decode", daemon=True)
        self._thread.start()

    def submit(self, request: dict[str, Any]) -> Sequence:
        """Queue a validated request (services.validation); it joins the batch between steps."""
        prompt = list(request["prompt_ids"]) or [self.codec.eos]  # an empty prompt starts a document
        max_new = int(request["max_new_tokens"])
        if not 1 <= max_new <= self.context - len(prompt):  # broken here, it would fail a shared step
            raise ValueError(f"{len(prompt)} prompt + {max_new} new tokens do not fit the context of {self.context}")
        seen = np.zeros(self.codec.vocab_size, dtype=bool)
        seen[prompt] = True
        seq = Sequence(
            prompt=prompt, params=SamplingParams.from_request(request), max_new_tokens=max_new,
            rng=np.random.default_rng(int(request["seed"])),
            text=TextState(self.codec.token_bytes, list(request.get("stop") or [])), seen=seen,
            logprobs=bool(request.get("logprobs")), channel=request.get("stream"),
            deadline=float(request.get("deadline") or time.time() + 3600),
        )
        with self._cond:
            if self._closed:
                raise RuntimeError("the decode scheduler is closed")
            self._waiting.append(seq)
            self._cond.notify()
        return seq

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)
        if self.publisher is not None:
            self.publisher.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self.batch.rows and not self._closed:
                    self._cond.wait()
                if self._closed:
                    break
                room = self.max_batch - len(self.batch.rows)
                admitted, self._waiting = self._waiting[:room], self._waiting[room:]
            try:
                self._iterate(admitted)
            except Exception as exc:  # a bug here must fail the requests, not hang them
                log.exception("decode loop failed; failing its %d sequences", len(self.batch.rows) + len(admitted))
                for seq in [*admitted, *self.batch.rows, *self._finished]:
                    self._fail(seq, exc)
                self._finished.clear()
                self.batch = DecodeBatch(self.spec, self.max_batch)
        for seq in [*self.batch.rows, *self._waiting]:
            self._fail(seq, RuntimeError("the worker is shutting down"))

    def _iterate(self, admitted: list[Sequence]) -> None:
        """Prefill the newcomers and stream their first tokens; one decode step for the batch."""
        self._drop_gone()
        first: list[tuple[Sequence, StreamChunk]] = []
        for seq in admitted:
            self._prefill(seq, first)
        if self.publisher is not None and first:  # newcomers' first tokens go out before the next step
            self.publisher.publish_now(first)
        self._stream([])
        if self.batch.rows:
            messages: list[tuple[Sequence, StreamChunk]] = []
            self._decode_step(messages)
            self._stream(messages)

    def _stream(self, messages: list[tuple[Sequence, StreamChunk]]) -> None:
        """Queue the chunks, then release the results of sequences that finished."""
        if self.publisher is not None:
            self.publisher.put(messages)
        for seq in self._finished:
            self._finish(seq, seq.finish_reason)
        self._finished.clear()

    def _drop_gone(self) -> None:
        """Stop sequences whose chunks reached nobody: the client cancelled or its gateway left."""
        gone = self.publisher.take_gone() if self.publisher is not None else set()
        if gone:
            for seq in gone:
                self._fail(seq, DeadlineExceededError("the client stopped listening"))
            self.batch.keep([seq not in gone for seq in self.batch.rows])

    def _prefill(self, seq: Sequence, messages: list[tuple[Sequence, StreamChunk]]) -> None:
        """Run the prompt alone, sample the first token; join the batch unless already done."""
        try:
            out = self.model.run(prefill_feeds(seq.prompt, self.spec))
        except Exception as exc:  # one bad prompt must not sink the batch
            self._fail(seq, exc)
            return
        seq.length = len(seq.prompt)
        token, logprob = next_token(out["logits"][0, -1], seq.params, seq.seen, seq.rng)
        metrics.first_token(self.name, time.monotonic() - seq.submitted)
        if self._advance(seq, token, logprob, messages):
            self.batch.add(seq, [out[name] for name in self.spec.names("present")])

    def _decode_step(self, messages: list[tuple[Sequence, StreamChunk]]) -> None:
        feeds = self.batch.feeds()
        try:
            out = self.model.run(feeds)
        except Exception as exc:  # the step failed: fail every row of it explicitly
            for seq in self.batch.rows:
                self._fail(seq, exc)
            self.batch.keep([False] * len(self.batch.rows))
            return
        self.steps.append(len(self.batch.rows))
        metrics.decode_step(self.name, len(self.batch.rows))
        self.batch.append([out[name] for name in self.spec.names("present")])
        rows = self.batch.rows
        tokens, logprobs = next_tokens(out["logits"][:, -1], [s.params for s in rows], [s.seen for s in rows],
                                       [s.rng for s in rows], self.workspace)
        alive = []
        for seq, token, logprob in zip(rows, tokens.tolist(), logprobs.tolist()):
            seq.length += 1
            alive.append(self._advance(seq, token, logprob, messages))
        if not all(alive):
            self.batch.keep(alive)

    def _advance(self, seq: Sequence, token: int, logprob: float, messages: list[tuple[Sequence, StreamChunk]]) -> bool:
        """Take the sampled token of `seq`; queue what may be streamed; False once it is done."""
        seq.generated += 1
        if token == self.codec.eos:
            reason = "eos"
        else:
            seq.seen[token] = True
            seq.last = token
            stopped = seq.text.add(token, logprob if seq.logprobs else 0.0)
            reason = "stop" if stopped else "length" if seq.generated >= seq.max_new_tokens else ""
        if not reason and time.time() > seq.deadline:
            self._fail(seq, DeadlineExceededError("the request's deadline passed during generation"))
            return False
        if seq.channel is not None:
            start, tokens = seq.text.ready(final=bool(reason))
            if tokens:
                messages.append((seq, {"start": start, "tokens": tokens}))
        if reason:
            seq.finish_reason = reason
            self._finished.append(seq)
        return not reason

    def _finish(self, seq: Sequence, reason: str) -> None:
        """The result; a streamed sequence's is released by the publisher after its last chunk."""
        if seq.done.is_set():
            return
        seq.outcome = {"ok": True, "text": seq.text.text, "tokens": [list(t) for t in seq.text.tokens],
                       "finish_reason": reason, "prompt_tokens": len(seq.prompt)}
        if seq.channel is not None and self.publisher is not None:
            self.publisher.put([(seq, None)])
        else:
            seq.done.set()

    def _fail(self, seq: Sequence, exc: BaseException) -> None:
        if not seq.done.is_set():
            seq.outcome = failure(exc)
            seq.done.set()


_schedulers_lock = threading.Lock()


def scheduler_for(loaded: LoadedModel) -> DecodeScheduler:
    """The process's scheduler for a model version, started on first use (after any fork)."""
    with _schedulers_lock:
        scheduler = loaded.state.get("decode_scheduler")
        if scheduler is None:
            codec = TextCodec.load(loaded.directory, loaded.manifest)
            scheduler = loaded.state["decode_scheduler"] = DecodeScheduler(loaded, codec, loaded.streams)
        return scheduler
