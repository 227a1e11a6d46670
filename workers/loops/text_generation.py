"""The autoregressive serving loop's handlers: GenerateText/CompleteText and ScoreText.

Thin: a generation joins the model's running decode batch (autoregressive.scheduler) and the
handler waits for it; scoring runs each text's windows (autoregressive.scoring). Each request
gets its own outcome; one that fails does not sink the others.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from genserve.protocol import Outcome
from genserve.workers.autoregressive.cache import CacheSpec
from genserve.workers.autoregressive.scheduler import Sequence, scheduler_for
from genserve.workers.autoregressive.scoring import log_likelihood
from genserve.workers.batching import CallLog, failure
from genserve.workers.runtime import LoadedModel


def generate_text(loaded: LoadedModel, requests: list[dict[str, Any]], calls: CallLog) -> list[Outcome]:
    """autoregressive: each request joins the model's running decode batch; wait for all."""
    submitted: list[Sequence | Outcome] = []
    for request in requests:
        try:
            submitted.append(scheduler_for(loaded).submit(request))
        except Exception as exc:
            submitted.append(failure(exc))
    outcomes = []
    for item in submitted:
        if isinstance(item, Sequence):
            outcomes.append(item.result(timeout=max(1.0, item.deadline - time.time() + 5.0)))
        else:
            outcomes.append(item)
    calls.rows.extend([1] * len(requests))  # each prompt's prefill; decode steps are shared
    return outcomes


def score_text(loaded: LoadedModel, requests: list[dict[str, Any]], calls: CallLog) -> list[Outcome]:
    """Log-likelihood of each text's tokens after the first, in half-overlapping windows."""
    config = loaded.manifest.config
    spec = CacheSpec.of(config)
    outcomes: list[Outcome] = []
    for request in requests:
        try:
            ids = np.asarray(request["ids"], dtype=np.int64)
            total = log_likelihood(loaded.onnx, ids, spec, int(config["block_size"]), calls)
            outcomes.append({"ok": True, "log_likelihood": total, "num_tokens": len(ids) - 1})
        except Exception as exc:  # one bad text must not sink the others
            outcomes.append(failure(exc))
    return outcomes
