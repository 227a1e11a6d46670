"""Classifier outputs -> probabilities -> the top-k labels; shared by both classifier loops.

Probabilities are made per row, so a request's never depend on what else shared its call.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)  # no overflow in exp
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> list[list[list[Any]]]:
    """Per row, [[label index, probability], ...] for the k most probable labels, best first."""
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]  # ties: lower index first
    return [[[int(j), float(p[j])] for j in row] for p, row in zip(probabilities, order)]
