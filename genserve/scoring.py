"""How a text longer than a language model's context is scored: ScoreText in the worker and
the GPT's held-out bits per byte at export use the same windows, so the two numbers agree."""

from __future__ import annotations


def score_windows(n_tokens: int, block_size: int) -> list[tuple[int, int, int]]:
    """(start, end, first) windows that score tokens 1..n-1 of a text once each.

    Window ids[start:end] is at most block_size long and scores the targets first..end-1;
    after the first window each moves by half a block, so every token is predicted from at
    least half a context of real text (the usual sliding-window perplexity).
    """
    windows, scored, stride = [], 1, max(1, block_size // 2)
    end = min(n_tokens, block_size)
    while scored < n_tokens:
        windows.append((max(0, end - block_size), end, scored))
        scored, end = end, min(n_tokens, end + stride)
    return windows
