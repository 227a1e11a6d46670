"""Where the worker groups requests into ONNX Runtime calls.

A task message carries several requests (the gateway grouped them, services/batcher.py).
Here each request is prepared on its own (a bad one fails alone), the good ones are stacked
along the batch axis and run in calls of at most `max_batch` rows, and the outputs are split
back per request. If a stacked call fails, the requests are retried one by one so that only
the request that really breaks the model fails.

This is the one place the worker stacks requests of a message; the one other level of
grouping in the worker is per decode step, inside a running generation batch
(autoregressive.scheduler). Handlers record the calls they make in the task's `CallLog`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from genserve.errors import GenserveError
from genserve.protocol import Outcome, failed
from genserve.workers.runtime import OnnxModel

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]


def failure(exc: BaseException) -> Outcome:
    """The one converter of a worker-side exception to a request's outcome: a genserve error
    keeps its code; anything else is logged with its traceback and answered INTERNAL."""
    if isinstance(exc, GenserveError):
        return failed(exc.code, str(exc))
    log.exception("request failed inside the worker")
    return failed("INTERNAL", f"worker error: {type(exc).__name__}")


@dataclass
class CallLog:
    """Rows of each ONNX Runtime call a task made (the task result's `calls`)."""

    rows: list[int] = field(default_factory=list)

    def record(self, rows: int) -> None:
        self.rows.append(rows)


def run_stacked(model: OnnxModel, feeds: list[Feeds], max_batch: int, calls: CallLog) -> list[Feeds]:
    """Stack per-request feeds, run them in calls of <= max_batch rows, split the outputs back."""
    sizes = [len(next(iter(f.values()))) for f in feeds]
    if len(feeds) == 1 and sizes[0] <= max_batch:  # one request, one call: nothing to stack or split
        out = model.run(feeds[0])
        calls.record(sizes[0])
        return [out]
    stacked = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    total = sum(sizes)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in model.output_names}
    for start in range(0, total, max_batch):
        chunk = {name: array[start : start + max_batch] for name, array in stacked.items()}
        for name, out in model.run(chunk).items():
            parts[name].append(out)
        calls.record(len(next(iter(chunk.values()))))  # calls that ran, not attempts
    merged = {name: np.concatenate(p) if len(p) > 1 else p[0] for name, p in parts.items()}
    bounds = np.cumsum([0] + sizes)
    return [{name: out[a:b] for name, out in merged.items()} for a, b in zip(bounds[:-1], bounds[1:])]


def run_requests(
    model: OnnxModel,
    requests: list[dict[str, Any]],
    prepare: Callable[[dict[str, Any]], Feeds],
    finish: Callable[[dict[str, Any], Feeds, Feeds], Outcome],
    max_batch: int,
    calls: CallLog,
) -> list[Outcome]:
    """Outcome per request, in order: prepare each, run the good ones together, finish each."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    prepared: list[tuple[int, Feeds]] = []
    for i, request in enumerate(requests):
        try:
            prepared.append((i, prepare(request)))
        except Exception as exc:  # one bad request must not sink the others
            outcomes[i] = failure(exc)
    if prepared:
        try:
            outputs = run_stacked(model, [f for _, f in prepared], max_batch, calls)
        except Exception:
            log.warning("stacked call of %d requests failed; retrying one by one", len(prepared))
            outputs = [_run_alone(model, f, max_batch, calls) for _, f in prepared]
        for (i, feeds), out in zip(prepared, outputs):
            try:
                outcomes[i] = out if isinstance(out, dict) and out.get("ok") is False else finish(requests[i], feeds, out)
            except Exception as exc:
                outcomes[i] = failure(exc)
    return outcomes  # type: ignore[return-value]


def _run_alone(model: OnnxModel, feeds: Feeds, max_batch: int, calls: CallLog) -> Feeds | Outcome:
    try:
        return run_stacked(model, [feeds], max_batch, calls)[0]
    except Exception as exc:
        return failure(exc)
