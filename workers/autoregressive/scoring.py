"""ScoreText's core: the log-likelihood of a text's tokens under the GPT on ONNX Runtime.

A text longer than the context is scored in half-overlapping windows
(`genserve.scoring.score_windows`): each window is one prefill (batch 1, empty past) and
contributes the log-probabilities of its tokens that no earlier window predicted.
"""

from __future__ import annotations

import numpy as np

from genserve.scoring import score_windows
from genserve.workers.autoregressive.cache import CacheSpec, prefill_feeds
from genserve.workers.batching import CallLog
from genserve.workers.runtime import OnnxModel


def log_likelihood(model: OnnxModel, ids: np.ndarray, spec: CacheSpec, context: int, calls: CallLog) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= 1; one ONNX Runtime call per window, logged in `calls`."""
    total = 0.0
    for start, end, first in score_windows(len(ids), context):
        logits = model.run(prefill_feeds(ids[start:end].tolist(), spec))["logits"][0]  # (W, V)
        calls.record(1)
        rows = logits[first - start - 1 : end - start - 1].astype(np.float64)  # predict first..end-1
        rows -= rows.max(axis=1, keepdims=True)
        logp = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        total += float(logp[np.arange(end - first), ids[first:end]].sum())
    return total
