"""Embedded mode: the worker's code on a thread pool in the gateway process, no broker."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from genserve.protocol import TaskPayload, TaskResult
from genserve.repository import ModelRepository
from genserve.services.streams import LocalStreams
from genserve.settings import Settings


class LocalBackend:
    """Embedded mode: the worker's code on a thread pool in this process."""

    def __init__(self, settings: Settings) -> None:
        from genserve.workers.runtime import ModelCache

        self.streams = LocalStreams()  # token streams: the decode thread calls back into the gateway
        self._cache = ModelCache(ModelRepository(settings.model_repository), settings.worker, streams=self.streams)
        # task_threads: generations wait on the shared decode loop, so several must run at once
        workers = max(settings.worker.concurrency, settings.worker.task_threads)
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="genserve-worker")

    async def run(self, ref: str, queue: str, op: str, requests: list[dict[str, Any]], deadline: float) -> TaskResult:
        from genserve.workers.tasks import execute

        payload: TaskPayload = {"model": ref, "op": str(op), "requests": requests}
        return await asyncio.get_running_loop().run_in_executor(self._pool, execute, payload, self._cache)

    async def check_capacity(self, queue: str) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        await self.streams.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
