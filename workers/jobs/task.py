"""The Celery task of batch-job chunks (`genserve.run_chunk`), bound to the worker's app."""

from __future__ import annotations

from typing import Any, Callable

from celery import Celery

from genserve.jobs.store import RedisJobStore
from genserve.protocol import CHUNK_TASK_NAME, job_key_prefix
from genserve.settings import Settings
from genserve.workers.jobs.runner import ChunkRunner
from genserve.workers.runtime import ModelCache


def register_chunk_task(app: Celery, settings: Settings, cache: Callable[[], ModelCache]) -> None:
    """`cache()` is the process's model cache, shared with the online task (one session per model)."""
    from genserve.workers.tasks import execute

    state: dict[str, ChunkRunner] = {}

    def runner() -> ChunkRunner:
        if "runner" not in state:  # created in the process that runs chunks (after any fork)
            store = RedisJobStore(settings.backend_url, job_key_prefix(settings.queue_prefix))
            state["runner"] = ChunkRunner(store, lambda payload: execute(payload, cache()), settings.jobs.fsync)
        return state["runner"]

    @app.task(name=CHUNK_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_chunk(self: Any, payload: dict[str, Any]) -> str:
        outcome = runner().run(payload)
        if outcome == "retry":  # a fresh message at the back of the bulk queue; this one is acked
            queue = (self.request.delivery_info or {}).get("routing_key")
            run_chunk.apply_async(args=[payload], queue=queue, routing_key=queue)
        return outcome
