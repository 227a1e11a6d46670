"""The one checkpoint: atomic, resumed only by the run that wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genserve.export.core.checkpoint import (CheckpointMismatchError, checkpoint_path, load_checkpoint,
                                             save_checkpoint)


def model_and_optimizers() -> tuple[torch.nn.Module, dict[str, torch.optim.Optimizer]]:
    model = torch.nn.Linear(3, 2)
    return model, {"adam": torch.optim.Adam(model.parameters())}


def test_a_saved_run_resumes_with_its_progress_and_history(tmp_path: Path) -> None:
    """What save_checkpoint wrote, load_checkpoint restores: weights, optimizers, done, history."""
    path = checkpoint_path(tmp_path)
    model, optimizers = model_and_optimizers()
    save_checkpoint(path, {"seed": 1}, model, optimizers, 3, [{"loss": 1.0}])
    again, again_optimizers = model_and_optimizers()
    assert load_checkpoint(path, {"seed": 1}, again, again_optimizers) == (3, [{"loss": 1.0}])
    assert torch.equal(again.weight, model.weight) and not path.with_suffix(".tmp").exists()


def test_nothing_to_resume_starts_at_zero(tmp_path: Path) -> None:
    """No checkpoint directory, or none written yet: (0, [])."""
    model, optimizers = model_and_optimizers()
    assert load_checkpoint(None, {}, model, optimizers) == (0, [])
    assert load_checkpoint(checkpoint_path(tmp_path), {}, model, optimizers) == (0, [])


def test_another_runs_or_an_old_format_checkpoint_is_refused(tmp_path: Path) -> None:
    """Other settings name the differing key; a checkpoint of the old format is refused too."""
    path = checkpoint_path(tmp_path)
    model, optimizers = model_and_optimizers()
    save_checkpoint(path, {"seed": 1}, model, optimizers, 1, [])
    with pytest.raises(CheckpointMismatchError, match="seed: saved 1, now 2"):
        load_checkpoint(path, {"seed": 2}, model, optimizers)
    torch.save({"seed": 1, "model": model.state_dict(), "optimizer": {}, "epoch": 1, "history": []}, path)
    with pytest.raises(CheckpointMismatchError, match="older genserve"):
        load_checkpoint(path, {"seed": 1}, model, optimizers)
