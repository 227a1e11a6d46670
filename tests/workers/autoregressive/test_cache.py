"""The decode batch's cache buffers: rows join, step and leave; each keeps exactly its own keys."""

from __future__ import annotations

import numpy as np
import pytest

from genserve.workers.autoregressive.cache import CacheSpec, DecodeBatch
from genserve.workers.autoregressive.scheduler import Sequence


def test_decode_batch_buffers_shrink_with_the_batch():
    """Every step reads the whole capacity: it must follow the live rows, not the largest batch ever."""
    spec = CacheSpec(layers=1, heads=2, head_dim=4)
    batch = DecodeBatch(spec, max_rows=4)

    def prefilled(length: int, value: float) -> list[np.ndarray]:
        return [np.full((1, 2, length, 4), value, np.float32)] * 2

    def step() -> None:
        batch.append([np.full((len(batch.rows), 2, 1, 4), 9.0, np.float32)] * 2)

    rows = [Sequence([1], None, 10, None, None, None, False, None, 0.0) for _ in range(2)]
    batch.add(rows[0], prefilled(3, 1.0))
    for _ in range(100):
        step()
    batch.add(rows[1], prefilled(2, 2.0))  # joins late: right-aligned at column 103
    step()
    assert batch.width == 104 and batch.mask.shape[1] == 128
    batch.keep([False, True])  # the long row leaves: only the late row's 3 columns stay
    assert batch.width == 3 and batch.mask.shape[1] == DecodeBatch.BLOCK
    assert batch.mask[0, :3].tolist() == [1, 1, 1] and not batch.mask[0, 3:].any() and not batch.mask[1:].any()
    assert batch.cache[0][0, 0, :3, 0].tolist() == [2.0, 2.0, 9.0]  # its keys moved with it
    batch.keep([False])
    assert batch.width == 0 and batch.mask.shape[1] == 0 and batch.cache[0].shape[2] == 0


@pytest.mark.parametrize("seed", range(4))
def test_decode_batch_keeps_every_row_s_cache_through_random_joins_steps_and_leaves(seed):
    """Against a plain list per row: whatever joins, steps and leaves happen, each live row's
    unmasked columns hold exactly its own keys and values, in order, ending at `width`, and the
    buffers have room for the next column and no more rows than max_rows."""
    rng = np.random.default_rng(seed)
    spec = CacheSpec(layers=2, heads=2, head_dim=3)
    batch = DecodeBatch(spec, max_rows=6)
    reference: list[list[np.ndarray]] = []  # per row: its (2 * layers, H, D) columns
    serial = iter(range(1, 10**6))

    def column() -> np.ndarray:
        return np.full((2 * spec.layers, spec.heads, spec.head_dim), next(serial), np.float32)

    for _ in range(300):
        action = rng.random()
        if action < 0.15 and len(batch.rows) < 6:  # a newcomer, prefilled alone
            columns = [column() for _ in range(int(rng.integers(1, 60)))]
            cache = [np.stack([c[i] for c in columns], axis=1)[None] for i in range(2 * spec.layers)]
            batch.add(Sequence([1], None, 10, None, None, None, False, None, 0.0), cache)
            reference.append(columns)
        elif action < 0.25 and batch.rows:  # some rows finish
            alive = (rng.random(len(batch.rows)) < 0.7).tolist()
            batch.keep(alive)
            reference = [r for r, keep in zip(reference, alive) if keep]
        elif batch.rows:  # a decode step
            new = [column() for _ in batch.rows]
            batch.append([np.stack([c[i] for c in new])[:, :, None] for i in range(2 * spec.layers)])
            for columns, c in zip(reference, new):
                columns.append(c)
        n = len(batch.rows)
        assert batch.mask.shape[0] <= 6 and (n == 0 or batch.width < batch.mask.shape[1])
        for row, columns in enumerate(reference):
            used = np.flatnonzero(batch.mask[row])
            assert len(used) == len(columns) and (not columns or used[-1] == batch.width - 1)
            assert used.tolist() == list(range(batch.width - len(columns), batch.width))  # contiguous, right-aligned
            for i, buffer in enumerate(batch.cache):
                np.testing.assert_array_equal(buffer[row, :, used], np.stack([c[i] for c in columns]))
        assert not batch.mask[n:].any()
