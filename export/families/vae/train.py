"""Training loop for the VAE: seeded, resumable from a per-epoch checkpoint, with a progress bar.

Every source of randomness is derived from (seed, epoch): initial weights, the batch order and
the reparameterisation noise. A run stopped after epoch k and resumed from its checkpoint
therefore ends with the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from genserve.export.families.vae.model import VAE, VAEConfig

CHECKPOINT = "checkpoint.pt"


class CheckpointMismatchError(ValueError):
    """A checkpoint directory holds a run with another config or other training settings."""


@dataclass
class TrainResult:
    model: VAE
    history: list[float] = field(default_factory=list)  # mean train loss (nats/image), all epochs
    resumed_from: int = 0  # epochs already done when this call started
    seconds: float = 0.0  # wall time of this call


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator private to one epoch of one seed, so resuming needs no saved RNG state."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def init_model(config: VAEConfig, seed: int) -> VAE:
    """A fresh VAE whose initial weights depend on `seed` only; global RNG state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE(config)


def run_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """One pass over shuffled data; returns the mean loss in nats per image."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        label = None if labels is None else labels[idx]
        loss = model.loss(images[idx], label, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(order)


def run_settings(
    config: VAEConfig, images: torch.Tensor, batch_size: int, lr: float, seed: int
) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (the epoch count may grow)."""
    data = hashlib.sha256(images.numpy().tobytes()).hexdigest()  # same digits, same order
    return {
        "config": asdict(config),
        "data_sha256": data,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }


def load_checkpoint(
    path: Path, settings: dict[str, Any], model: VAE, optimizer: torch.optim.Optimizer
) -> tuple[int, list[float]]:
    """Restore model and optimizer from `path`; returns (epochs done, loss history)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    differ = [key for key in settings if state.get(key) != settings[key]]
    if differ:
        changes = "; ".join(f"{k}: saved {state.get(k)}, now {settings[k]}" for k in differ)
        raise CheckpointMismatchError(
            f"{path} belongs to another run ({changes}); "
            "use another checkpoint_dir or delete the checkpoint"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], list(state["history"])


def save_checkpoint(
    path: Path,
    settings: dict[str, Any],
    model: VAE,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[float],
) -> None:
    """Write atomically (temp file + rename) so a killed run never leaves a torn checkpoint."""
    state = {
        **settings,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_vae(
    config: VAEConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    checkpoint_dir: Path | None,
    progress: bool = True,
) -> TrainResult:
    """Train with Adam for `epochs` epochs in total, resuming from checkpoint_dir if it has one.

    The checkpoint is rewritten after every epoch. One that already holds `epochs` or more
    epochs is returned as it is; `len(result.history)` says how many epochs the model has seen.
    """
    start_time = time.perf_counter()
    model = init_model(config, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    images = torch.from_numpy(np.ascontiguousarray(train_images, dtype=np.float32))
    labels = torch.from_numpy(train_labels.astype(np.int64)) if config.num_classes else None
    settings = run_settings(config, images, batch_size, lr, seed)
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT
    done, history = 0, []
    if path is not None and path.is_file():
        done, history = load_checkpoint(path, settings, model, optimizer)
    bar = tqdm(total=epochs, initial=min(done, epochs), desc="train vae", disable=not progress)
    for epoch in range(done, epochs):
        g = epoch_generator(seed, epoch)
        history.append(run_epoch(model, optimizer, images, labels, batch_size, g))
        if path is not None:
            save_checkpoint(path, settings, model, optimizer, epoch + 1, history)
        bar.set_postfix(loss=f"{history[-1]:.2f}", refresh=False)
        bar.update(1)
    bar.close()
    model.eval()
    return TrainResult(model, history, done, time.perf_counter() - start_time)
