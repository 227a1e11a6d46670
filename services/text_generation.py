"""GenerateText, CompleteText and ScoreText: tokenize, validate, enqueue, stream back.

The gateway tokenizes with the model's own tokenizer (published beside model.onnx, checked
against the manifest's sha256) so every limit that depends on token counts is checked before
anything is enqueued; the worker receives token ids. Each generation is its own task message
(the dispatcher does not group "generate_text": the worker batches generations per decode
step instead, and a short request must not wait for a long one in the same message).

Streaming merges two sources: chunks on the request's stream channel (early tokens, as the
worker produces them) and the task's final result (every token, the finish reason). Tokens
are identified by index, so a chunk that repeats tokens (a redelivered task) or one that
was lost only changes when tokens arrive, never which tokens or in what order.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator

from genserve.protocol import Op, StreamChunk, stream_channel
from genserve.repository import Manifest
from genserve.services import validation
from genserve.services.catalog import ModelCatalog
from genserve.settings import Settings
from genserve.v1 import inference_pb2
from genserve.tokenization import TextCodec

if TYPE_CHECKING:
    from genserve.services.dispatch import Dispatcher

FINISH_REASONS = {
    "length": inference_pb2.FINISH_REASON_LENGTH,
    "stop": inference_pb2.FINISH_REASON_STOP,
    "eos": inference_pb2.FINISH_REASON_EOS,
}


def _tokens(tokens: list[Any]) -> list[inference_pb2.Token]:
    return [inference_pb2.Token(id=int(t[0]), text=t[1], logprob=float(t[2])) for t in tokens]


class TextGenerationService:
    """The text generation RPCs' bodies; the servicer delegates to these."""

    def __init__(self, settings: Settings, catalog: ModelCatalog, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.catalog = catalog
        self.dispatcher = dispatcher
        self._codecs: dict[str, TextCodec] = {}
        self._lock = threading.Lock()

    def codec(self, manifest: Manifest) -> TextCodec:
        """The model version's tokenizer, loaded once (sha256 checked) and cached."""
        with self._lock:
            if manifest.ref not in self._codecs:
                directory = self.catalog.repository.root / manifest.name / manifest.version
                self._codecs[manifest.ref] = TextCodec.load(directory, manifest)
            return self._codecs[manifest.ref]

    def _generation(self, request: inference_pb2.GenerateTextRequest, rpc: str) -> tuple[Manifest, validation.GenerateTextInput]:
        manifest = self.catalog.resolve(request.model)
        validation.require_rpc(manifest, rpc)
        params = validation.generate_text(request, manifest, self.settings.limits, self.codec(manifest), rpc)
        return manifest, params

    async def _submit(self, manifest: Manifest, params: validation.GenerateTextInput, stream: str | None,
                      timeout_s: float) -> dict[str, Any]:
        task = {**params.to_task(), "stream": stream, "deadline": time.time() + timeout_s}
        return await self.dispatcher.submit(manifest, Op.GENERATE_TEXT, task, 1, timeout_s)

    async def generate(self, request: inference_pb2.GenerateTextRequest, timeout_s: float) -> AsyncIterator[inference_pb2.GenerateTextChunk]:
        """Chunks as the worker streams them; the last one carries the finish reason.

        Whatever queued up while the client was being sent the previous message goes out as
        one message: under load a stream sends fewer, larger chunks instead of falling behind.
        """
        manifest, params = self._generation(request, "GenerateText")
        subscription = await self.dispatcher.backend.streams.subscribe(stream_channel(uuid.uuid4().hex))
        result = asyncio.ensure_future(self._submit(manifest, params, subscription.channel, timeout_s))
        result.add_done_callback(lambda _: subscription.queue.put_nowait(None))  # wakes the reader
        sent = 0  # tokens already yielded
        try:
            while not result.done():
                fresh: list[Any] = []
                chunk: StreamChunk | None
                for chunk in await subscription.drain():
                    if chunk is None:
                        continue
                    start, tokens = chunk["start"], chunk["tokens"]
                    if start <= sent + len(fresh) < start + len(tokens):  # new tokens, none missing before
                        fresh.extend(tokens[sent + len(fresh) - start :])
                if fresh:
                    yield inference_pb2.GenerateTextChunk(text="".join(t[1] for t in fresh),
                                                          tokens=_tokens(fresh), seed=params.seed)
                    sent += len(fresh)
            outcome = result.result()
            rest = outcome["tokens"][sent:]
            yield inference_pb2.GenerateTextChunk(
                text="".join(t[1] for t in rest), tokens=_tokens(rest),
                finish_reason=FINISH_REASONS[outcome["finish_reason"]], seed=params.seed,
            )
        finally:
            if not result.done():
                result.cancel()
            subscription.close()  # the worker sees nobody listening and drops the sequence

    async def complete(self, request: inference_pb2.GenerateTextRequest, timeout_s: float) -> inference_pb2.GenerateTextResponse:
        manifest, params = self._generation(request, "CompleteText")
        outcome = await self._submit(manifest, params, None, timeout_s)
        return inference_pb2.GenerateTextResponse(
            text=outcome["text"], tokens=_tokens(outcome["tokens"]),
            finish_reason=FINISH_REASONS[outcome["finish_reason"]], seed=params.seed, model=manifest.ref,
        )

    async def score(self, request: inference_pb2.ScoreTextRequest, timeout_s: float) -> inference_pb2.ScoreTextResponse:
        manifest = self.catalog.resolve(request.model)
        validation.require_rpc(manifest, "ScoreText")
        params = validation.score_text(request, manifest, self.settings.limits, self.codec(manifest))
        outcome = await self.dispatcher.submit(manifest, Op.SCORE_TEXT, params.to_task(), 1, timeout_s)
        log_likelihood, n = outcome["log_likelihood"], outcome["num_tokens"]
        return inference_pb2.ScoreTextResponse(
            log_likelihood=log_likelihood, num_tokens=n, nats_per_token=-log_likelihood / n,
            bits_per_byte=-log_likelihood / math.log(2) / params.num_bytes, model=manifest.ref,
        )
