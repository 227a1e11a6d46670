"""Training the VAE: Adam on the negative ELBO, through the shared resumable loop (core/training.py).

Every source of randomness is derived from (seed, epoch): initial weights, the batch order and
the reparameterisation noise. A run stopped after epoch k and resumed from its checkpoint
therefore ends with the same weights as a run that was never interrupted. Every digit is seen
each epoch (the last batch may be short: the VAE has no batch norm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genserve.export.core.training import FitResult, fit, init_module, run_settings
from genserve.export.families.vae.model import VAE, VAEConfig


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
) -> FitResult:
    """Train with Adam for `epochs` epochs in total, resuming from checkpoint_dir if it has one.

    The checkpoint is rewritten after every epoch. One that already holds `epochs` or more
    epochs is returned as it is; `len(result.history)` says how many epochs the model has seen,
    `result.history[k]["loss"]` the mean train loss of epoch k in nats per image.
    """
    model = init_module(VAE, config, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    images = torch.from_numpy(np.ascontiguousarray(train_images, dtype=np.float32))
    labels = torch.from_numpy(train_labels.astype(np.int64)) if config.num_classes else None

    def step(idx: torch.Tensor, g: torch.Generator) -> dict[str, float]:
        loss = model.loss(images[idx], None if labels is None else labels[idx], g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    settings = run_settings(config, [images.numpy()], batch_size=batch_size, lr=lr, seed=seed)
    return fit(model, {"adam": optimizer}, step, len(images), epochs=epochs, batch_size=batch_size,
               seed=seed, settings=settings, checkpoint_dir=checkpoint_dir, desc="train vae",
               progress=progress, drop_last=False)
