"""The GPT's training loop (export/families/gpt/train.py): half-length windows first, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genserve.export.families.gpt import train
from tests.text.conftest import tiny_gpt_config

STEPS, SHORT = 12, 0.5


@pytest.fixture
def stream() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 384, 5_000).astype(np.int64)


def run(stream: np.ndarray, checkpoint_dir=None) -> train.FitResult:
    return train.train_gpt(tiny_gpt_config(), stream, steps=STEPS, batch_size=2, lr=1e-3, short_fraction=SHORT,
                           seed=0, checkpoint_dir=checkpoint_dir, progress=False)


def test_the_first_steps_train_on_half_length_windows_with_the_same_tokens(stream, monkeypatch):
    shapes = []
    real = train.batch_windows

    def recording(data, block, batch, g):
        x, y = real(data, block, batch, g)
        shapes.append(tuple(x.shape))
        return x, y

    monkeypatch.setattr(train, "batch_windows", recording)
    run(stream)
    block = tiny_gpt_config().block_size
    assert shapes == [(4, block // 2)] * 6 + [(2, block)] * 6


def test_a_run_stopped_after_the_switch_resumes_to_the_same_weights(stream, tmp_path, monkeypatch):
    straight = run(stream).model.state_dict()
    monkeypatch.setattr(train, "CHECKPOINT_EVERY", 4)
    calls = 0
    real = train.batch_windows

    def crashing(*args):
        nonlocal calls
        calls += 1
        if calls == 10:  # step 9: checkpoints were written after steps 4 and 8
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train, "batch_windows", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(stream, tmp_path)
    monkeypatch.setattr(train, "batch_windows", real)
    resumed = run(stream, tmp_path)
    assert resumed.resumed_from == 8 and len(resumed.history) == STEPS
    state = resumed.model.state_dict()
    assert all(torch.equal(state[k], straight[k]) for k in straight)
