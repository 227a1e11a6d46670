"""Build the denoising autoencoder: digits -> noisy/clean pairs -> train -> PSNR -> publish.

`build_dae` is what `genserve export dae` runs. Training pairs are made on the fly: each clean
training digit gets Gaussian noise of a std drawn per image from TRAIN_SIGMA, clipped to
[0, 1], so one model serves light and heavy noise. Held-out digits (never trained on) are
measured at sigma 0.3 and 0.5: PSNR of the noisy input and of the denoised output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genserve.export.core.options import BuildOptions, RunOptions
from genserve.export.core.publishing import digit_training_record, publish_model
from genserve.export.core.training import FitResult, fit, init_module, run_settings
from genserve.export.data.mnist import digit_split
from genserve.export.families.dae.model import DAE, DAE_SPEC, DAEConfig, add_noise
from genserve.export.metrics.images import psnr
from genserve.repository import ImageSpec

# Defaults: the full build (4,500 training digits) takes under a minute on 2 CPU cores.
DEFAULT_EPOCHS = 12  # +9.2 dB at sigma 0.5 after 10; more adds little
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 2e-3
TRAIN_SIGMA = (0.1, 0.6)  # noise std per training image, uniform in this range
EVAL_SIGMAS = (0.3, 0.5)
GRID_DIGITS = 16  # samples.png: rows of clean, noisy (sigma 0.5) and denoised digits


def train_dae(
    config: DAEConfig,
    train_images: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    checkpoint_dir: Path | None,
    progress: bool = True,
) -> FitResult:
    """Adam on the reconstruction loss of freshly noised training digits; resumable."""
    model = init_module(DAE, config, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    images = torch.from_numpy(np.ascontiguousarray(train_images, dtype=np.float32))

    def step(idx: torch.Tensor, g: torch.Generator) -> dict[str, float]:
        clean = images[idx]  # (B, C, H, W)
        sigma = torch.empty(len(idx)).uniform_(*TRAIN_SIGMA, generator=g)  # (B,)
        loss = model.loss(add_noise(clean, sigma, g), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    settings = run_settings(config, [train_images], batch_size=batch_size, lr=lr, seed=seed,
                            train_sigma=list(TRAIN_SIGMA))
    return fit(model, {"adam": optimizer}, step, len(images), epochs=epochs, batch_size=batch_size,
               seed=seed, settings=settings, checkpoint_dir=checkpoint_dir, desc="train dae",
               progress=progress)


@torch.no_grad()
def psnr_metrics(model: DAE, heldout: np.ndarray, seed: int) -> dict[str, float]:
    """PSNR (dB) of noisy and of denoised held-out digits at each of EVAL_SIGMAS."""
    model.eval()
    clean = torch.from_numpy(np.ascontiguousarray(heldout, dtype=np.float32))
    metrics = {}
    for sigma in EVAL_SIGMAS:
        noisy = add_noise(clean, sigma, torch.Generator().manual_seed(seed))
        denoised = model(noisy)
        before = psnr(clean.numpy(), noisy.numpy())
        after = psnr(clean.numpy(), denoised.numpy())
        metrics[f"psnr_noisy_sigma{sigma}"] = before
        metrics[f"psnr_denoised_sigma{sigma}"] = after
        metrics[f"psnr_gain_sigma{sigma}"] = after - before
    return metrics


@torch.no_grad()
def denoise_grid(model: DAE, heldout: np.ndarray, seed: int) -> torch.Tensor:
    """(6 * 8, C, H, W): per 8 digits a row of clean, of noisy (sigma 0.5), of denoised."""
    # the held-out digits are sorted by class: pick a seeded few of all classes
    pick = np.random.default_rng(seed).permutation(len(heldout))[:GRID_DIGITS]
    clean = torch.from_numpy(np.ascontiguousarray(heldout[pick], dtype=np.float32))
    noisy = add_noise(clean, EVAL_SIGMAS[-1], torch.Generator().manual_seed(seed))
    rows = [torch.stack([c, n, model(n)]) for c, n in zip(clean.split(8), noisy.split(8))]
    return torch.cat([row.flatten(0, 1) for row in rows])


def build_dae(
    repo_root: Path,
    *,
    name: str = "dae",
    config: DAEConfig | None = None,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    run: RunOptions = RunOptions(),
) -> Path:
    """Train (resuming); unless train_only, measure, export and publish the next version of
    `name` and return its directory (train_only: the checkpoint directory)."""
    config = config or DAEConfig()
    x_train, _, x_held, y_held, dataset = digit_split(run.data_path, run.limit, run.seed)
    result = train_dae(config, x_train, epochs=epochs, batch_size=batch_size, lr=lr, seed=run.seed,
                       checkpoint_dir=run.checkpoint_dir, progress=run.progress)
    if run.train_only:
        return run.trained(repo_root)
    training = digit_training_record(
        dataset, x_train, x_held, run.seed, result, batch_size=batch_size, lr=lr, optimizer="Adam",
        noise=f"Gaussian, sigma uniform in {TRAIN_SIGMA} per image, clipped to [0, 1]",
    )
    return publish_model(
        repo_root, name, DAE_SPEC, result.model,
        image=ImageSpec(channels=config.channels, height=config.height, width=config.width),
        training=training, metrics=psnr_metrics(result.model, x_held, run.seed),
        grid=(denoise_grid(result.model, x_held, run.seed), 8),
    )


def build(options: BuildOptions) -> Path:
    """The convolutional denoising autoencoder on noisy/clean digit pairs (--data: MNIST IDX)."""
    return build_dae(options.repo_root, **options.pipeline_kwargs())
