"""The one training checkpoint: written atomically, resumed only by the run that wrote it.

A checkpoint holds the run's settings (config, a digest of the data, the training knobs), the
model and optimizer states, how far the run got (epochs, or steps for the GPT) and its loss
history. Loading compares the saved settings with the current ones and refuses another run's
checkpoint with CheckpointMismatchError rather than silently continuing it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT = "checkpoint.pt"


class CheckpointMismatchError(ValueError):
    """A checkpoint directory holds a run with another config or other training settings."""


def checkpoint_path(checkpoint_dir: Path | None) -> Path | None:
    """Where a run keeps its checkpoint; None when it keeps none."""
    return None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT


def load_checkpoint(
    path: Path | None,
    settings: dict[str, Any],
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
) -> tuple[int, list[Any]]:
    """Restore model and optimizers from `path` if it exists; returns (done, loss history),
    (0, []) when there is nothing to resume."""
    if path is None or not path.is_file():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "done" not in state or "optimizers" not in state:
        raise CheckpointMismatchError(f"{path} was written by an older genserve (another checkpoint "
                                      "format); use another checkpoint_dir or delete the checkpoint")
    differ = [key for key in settings if state.get(key) != settings[key]]
    if differ:
        changes = "; ".join(f"{k}: saved {state.get(k)}, now {settings[k]}" for k in differ)
        raise CheckpointMismatchError(
            f"{path} belongs to another run ({changes}); "
            "use another checkpoint_dir or delete the checkpoint"
        )
    model.load_state_dict(state["model"])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    return state["done"], list(state["history"])


def save_checkpoint(
    path: Path,
    settings: dict[str, Any],
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    done: int,
    history: list[Any],
) -> None:
    """Write atomically (temp file + rename) so a killed run never leaves a torn checkpoint."""
    state = {
        **settings,
        "model": model.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "done": done,  # epochs, or steps for a step-counted run
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
