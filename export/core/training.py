"""The resumable training loop of the image families (denoiser, classifier, GANs).

The family gives a model, its optimizers and a `step(batch indices, generator)` returning its
losses; this loop shuffles, steps, shows the running losses on a progress bar, and writes a
checkpoint after every epoch. As in train.py (the VAE's loop), every source of randomness comes
from (seed, epoch): initial weights from `init_module`, and per epoch one generator for the batch
order and whatever noise the step draws. A run stopped after epoch k and resumed from its
checkpoint ends with the same weights as a run that never stopped.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from genserve.export.families.vae.train import CHECKPOINT, CheckpointMismatchError, epoch_generator

# (batch indices (B,), the epoch's generator) -> {loss name: value} for the progress bar
Step = Callable[[torch.Tensor, torch.Generator], dict[str, float]]


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: mean of each loss
    resumed_from: int = 0  # epochs already done when this call started
    seconds: float = 0.0  # wall time of this call


def init_module(build: Callable[[Any], nn.Module], config: Any, seed: int) -> nn.Module:
    """A fresh module whose initial weights depend on `seed` only; global RNG state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(config)


def run_settings(config: Any, data: list[np.ndarray], **knobs: Any) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (the epoch count may grow)."""
    digest = hashlib.sha256()
    for array in data:
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"config": asdict(config), "data_sha256": digest.hexdigest(), **knobs}


def fit(
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    step: Step,
    n: int,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    settings: dict[str, Any],
    checkpoint_dir: Path | None,
    desc: str,
    progress: bool = True,
) -> FitResult:
    """Train for `epochs` epochs in total over n examples, resuming from checkpoint_dir.

    Batches are full (the last partial one of an epoch is dropped; the next epoch reshuffles),
    so batch norm never sees a batch of one. A checkpoint that already holds `epochs` or more
    epochs is returned as it is.
    """
    started = time.perf_counter()
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT
    done, history = 0, []
    if path is not None and path.is_file():
        done, history = load(path, settings, model, optimizers)
    batch_size = min(batch_size, n)
    steps = n // batch_size
    bar = tqdm(total=epochs * steps, initial=min(done, epochs) * steps, desc=desc,
               disable=not progress)
    for epoch in range(done, epochs):
        model.train()
        g = epoch_generator(seed, epoch)
        order = torch.randperm(n, generator=g)
        sums: dict[str, float] = {}
        for i in range(steps):
            losses = step(order[i * batch_size : (i + 1) * batch_size], g)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
            if i % 10 == 0 or i == steps - 1:
                bar.set_postfix({k: f"{v / (i + 1):.3f}" for k, v in sums.items()}, refresh=False)
            bar.update(1)
        history.append({name: total / steps for name, total in sums.items()})
        if path is not None:
            save(path, settings, model, optimizers, epoch + 1, history)
    bar.close()
    model.eval()
    return FitResult(model, history, done, time.perf_counter() - started)


def load(
    path: Path,
    settings: dict[str, Any],
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
) -> tuple[int, list[dict[str, float]]]:
    """Restore model and optimizers from `path`; returns (epochs done, loss history)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
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
    return state["epoch"], list(state["history"])


def save(
    path: Path,
    settings: dict[str, Any],
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    epoch: int,
    history: list[dict[str, float]],
) -> None:
    """Write atomically (temp file + rename) so a killed run never leaves a torn checkpoint."""
    state = {
        **settings,
        "model": model.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "epoch": epoch,
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
