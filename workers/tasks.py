"""Task entry points: decode a task message -> run its requests batched -> encode the result.

`execute` is the whole worker-side protocol and needs no Celery: the Celery task, the
embedded mode and the tests call it. Message and result are the msgpack-able dicts that
`genserve.protocol` describes (TaskPayload in, TaskResult out, one Outcome per request).

Every request in a message gets an outcome; a failure that hits the whole message (model
missing, checksum mismatch, an op the model's loop does not serve) is reported once per
request, never only logged.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable

from celery import Celery
from celery.exceptions import Ignore

from genserve.errors import InvalidArgumentError
from genserve.protocol import TASK_NAME, UNGROUPED_OPS, Loop, Op, TaskPayload, TaskResult, serves
from genserve.workers import failover, metrics, receipts, strategy
from genserve.workers.batching import CallLog, failure
from genserve.workers.loops import HANDLERS, Handler
from genserve.workers.runtime import LoadedModel, ModelCache

__all__ = ["TASK_NAME", "execute", "register_tasks"]  # TASK_NAME: re-exported from genserve.protocol


def handler_for(loaded: LoadedModel, op: str) -> Handler:
    """The handler of `op` for the model's loop; an op the loop does not serve is refused."""
    loop = loaded.manifest.loop
    if not serves(loop, op):
        raise InvalidArgumentError(f"{loaded.manifest.ref} ({loop}) does not serve {op}")
    return HANDLERS[(Loop(loop), Op(op))]


def execute(payload: TaskPayload, cache: ModelCache) -> TaskResult:
    requests = payload["requests"]
    started = metrics.message_started(payload)  # metrics and the request ids on log lines
    calls = CallLog()
    provider = ""
    try:
        loaded = cache.get(payload["model"])
        provider = loaded.onnx.provider
        results = handler_for(loaded, payload["op"])(loaded, requests, calls)
    except Exception as exc:
        results = [failure(exc)] * len(requests)
    result: TaskResult = {"results": results, "provider": provider, "calls": calls.rows,
                          "worker": f"{socket.gethostname()}:{os.getpid()}"}  # this process: after any fork
    metrics.message_finished(started, payload, result)
    return result


RESULT_REPR_CHARS = 8  # of a task's return value on Celery's log line: "{'results...', ...}"


def register_tasks(app: Celery, cache_factory: Callable[[], ModelCache]) -> None:
    """Bind the task to `app`; `cache_factory()` builds the per-process model cache lazily."""
    state: dict[str, ModelCache] = {}

    def answer(task_id: str, payload: TaskPayload) -> TaskResult:
        # A second copy of a message a live worker runs is not answered: acked, no result
        # stored, the other copy's result is the answer. The owner claim of a one-shot batch
        # is read after it ran (workers/receipts.py: its reply is in by then; answering is
        # what must not happen twice, and the bytes are the same); a streamed generation's
        # before it starts, as its chunks reach the client as they come.
        if failover.take_duplicate(task_id):  # found by failover's own claim (no receipt)
            raise Ignore()
        # Created on the first task, in the process that runs it (after any fork).
        if "cache" not in state:
            state["cache"] = cache_factory()
        if payload.get("op") in UNGROUPED_OPS:  # streamed: settled before it runs
            if receipts.settle(task_id):
                raise Ignore()
            return execute(payload, state["cache"])
        result = execute(payload, state["cache"])
        if receipts.settle(task_id):
            raise Ignore()
        return result

    # resultrepr_maxsize: Celery's tracer reprs every return value for its "succeeded" log
    # line (whatever the log level), walking all of a batch's outcomes and their tensor bytes;
    # a short repr costs a few tokens instead. The result itself is stored whole.
    # Strategy: in a solo worker, the common message goes the short way (workers/strategy.py),
    # which calls `answer` itself; any other message or pool takes Celery's own path.
    # shared=False: the task closes over this app's model cache; a shared task would be
    # registered into every app finalized later in the process, ahead of that app's own.
    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, resultrepr_maxsize=RESULT_REPR_CHARS,
              bind=True, Strategy=strategy.ONLINE, answer=staticmethod(answer), shared=False)
    def run_batch(self: Any, payload: TaskPayload) -> TaskResult:
        return answer(self.request.id, payload)
