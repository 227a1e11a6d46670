"""Task entry points: decode a task message -> run its requests batched -> encode the result.

`execute` is the whole worker-side protocol and needs no Celery: the Celery task, the
embedded mode and the tests call it. Message and result are plain msgpack-able dicts:

    payload = {"model": "vae:1", "op": "generate_images", "requests": [{...}, ...]}
    result  = {"results": [{"ok": True, ...} | {"ok": False, "code", "message"}, ...],
               "provider": "CPUExecutionProvider", "calls": [64, 12], "worker": "host:pid"}

Every request in a message gets an outcome; a failure that hits the whole message (model
missing, checksum mismatch) is reported once per request, never only logged.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Celery

from genserve.errors import InvalidArgumentError
from genserve.workers import metrics
from genserve.workers.batching import BatchStats, failure
from genserve.workers.loops import HANDLERS
from genserve.workers.runtime import ModelCache

log = logging.getLogger(__name__)

TASK_NAME = "genserve.run_batch"
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def execute(payload: dict[str, Any], cache: ModelCache) -> dict[str, Any]:
    requests = payload["requests"]
    started = metrics.message_started(payload)  # metrics and the request ids on log lines
    stats = BatchStats()
    provider = ""
    try:
        loaded = cache.get(payload["model"])
        provider = loaded.onnx.provider
        handler = HANDLERS.get((loaded.manifest.loop, payload["op"]))
        if handler is None:
            raise InvalidArgumentError(
                f"{loaded.manifest.ref} ({loaded.manifest.loop}) does not serve {payload['op']}"
            )
        results = handler(loaded, requests, stats)
    except Exception as exc:
        results = [failure(exc)] * len(requests)
    result = {"results": results, "provider": provider, "calls": stats.calls,
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    metrics.message_finished(started, payload, result)
    return result


def register_tasks(app: Celery, cache_factory: Any) -> None:
    """Bind the task to `app`; `cache_factory()` builds the per-process model cache lazily."""
    state: dict[str, ModelCache] = {}

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)
    def run_batch(payload: dict[str, Any]) -> dict[str, Any]:
        # Created on the first task, in the process that runs it (after any fork).
        if "cache" not in state:
            state["cache"] = cache_factory()
        return execute(payload, state["cache"])
