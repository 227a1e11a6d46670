"""Embedded mode: the worker's code in the gateway process, no broker.

A small batch of a one-shot op (images, tensors, classification: at most
`worker.inline_samples` samples) runs right on the event loop, as KServe's ModelServer runs
a synchronous `predict`: ONNX Runtime takes tens of microseconds for it, less than handing it
to a thread and waking the loop again. Everything else runs on a thread pool: larger
batches, a model's first batch (its session is created then) and text generation, whose
tasks wait on the shared decode loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from genserve.protocol import Op, TaskPayload, TaskResult, graphs_of_op
from genserve.repository import ModelRepository
from genserve.services.streams import LocalStreams
from genserve.settings import Settings

# Ops whose tasks wait on something (the decode scheduler): never on the event loop.
THREAD_OPS = frozenset({Op.GENERATE_TEXT, Op.SCORE_TEXT})


class LocalBackend:
    """Embedded mode: the worker's code on the event loop (small batches) or a thread pool."""

    def __init__(self, settings: Settings) -> None:
        from genserve.workers.runtime import ModelCache

        self.streams = LocalStreams()  # token streams: the decode thread calls back into the gateway
        self._cache = ModelCache(ModelRepository(settings.model_repository), settings.worker, streams=self.streams)
        self._inline_samples = settings.worker.inline_samples
        # task_threads: generations wait on the shared decode loop, so several must run at once
        workers = max(settings.worker.concurrency, settings.worker.task_threads)
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="genserve-worker")

    async def run(self, ref: str, queue: str, op: str, requests: list[dict[str, Any]], deadline: float,
                  samples: int = 0) -> TaskResult:
        from genserve.workers.tasks import execute

        payload: TaskPayload = {"model": ref, "op": str(op), "requests": requests}
        if self.inline(ref, op, samples):
            return execute(payload, self._cache)
        return await asyncio.get_running_loop().run_in_executor(self._pool, execute, payload, self._cache)

    def run_inline(self, ref: str, op: str, request: dict[str, Any]) -> TaskResult:
        """One request on the calling thread (the dispatcher's lone-request path)."""
        from genserve.workers.tasks import execute

        return execute({"model": ref, "op": op, "requests": [request]}, self._cache)

    def inline(self, ref: str, op: str, samples: int) -> bool:
        """Whether this batch runs on the event loop: small, one-shot, its model (and every other
        graph the op reads: EncodeImages' encoder) loaded."""
        return (0 < samples <= self._inline_samples and op not in THREAD_OPS
                and all(self._cache.is_loaded(ref, role) for role in ("model", *graphs_of_op(op))))

    async def check_capacity(self, queue: str) -> None:
        return None

    def consumers(self, queue: str) -> int:
        return 0  # no queue: one batch at a time, as the gateway's own event loop runs it

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        await self.streams.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
