"""Export + publish for any family: ONNX graphs with parity, weights, grid, manifest, version.

The image families' pipelines (denoise.py, classify.py, gan.py) end here; the manifest they
get is built from the family spec and what the pipeline measured, nothing family-specific.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genserve.export.data.mnist import describe_source, load_mnist, train_heldout_split
from genserve.export.metrics.elbo import sample_grid_png
from genserve.export.core.spec import ModelSpec
from genserve.export.core.onnx_export import export_model
from genserve.export.families.vae.build import WEIGHTS, load_published, save_weights, tool_versions
from genserve.repository import (
    ImageSpec,
    Manifest,
    ModelRepository,
    OnnxFile,
    next_version,
    publish,
)

DIGIT_HELDOUT_FRACTION = 0.1  # the VAE's split: every digit family holds out the same digits


def digit_split(
    data_path: Path | None, limit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(x_train, y_train, x_held, y_held, dataset description) of the digits, as the VAE splits
    them: with the same seed every digit family trains and is measured on the same digits."""
    images, labels = load_mnist(data_path, limit=limit, seed=seed)
    split = train_heldout_split(images, labels, DIGIT_HELDOUT_FRACTION, seed)
    dataset = describe_source(data_path) + ("" if limit is None else f", {limit} digits")
    return (*split, dataset)


def publish_model(
    repo_root: Path,
    name: str,
    spec: ModelSpec,
    model: nn.Module,
    *,
    image: ImageSpec,
    training: dict[str, Any],
    metrics: dict[str, float],
    labels: list[str] | None = None,
    latent_dim: int = 0,
    grid: tuple[np.ndarray | torch.Tensor, int] | None = None,
    description: str | None = None,
) -> Path:
    """Export `model`'s graphs (parity-checked), publish the next version of `name`.

    `grid` is (images, per row) for samples.png; the PyTorch weights go beside the ONNX files;
    `description` replaces the family's when this variant needs saying.
    """
    config = model.config
    with tempfile.TemporaryDirectory(prefix="genserve-export-") as tmp:
        exported = export_model(spec, model, Path(tmp))
        extra = {WEIGHTS: save_weights(spec, config, model, Path(tmp) / WEIGHTS)}
        if grid is not None:
            extra["samples.png"] = sample_grid_png(grid[0], Path(tmp) / "s.png", nrow=grid[1])
        files = {  # path and sha256 are filled in by publish()
            role: OnnxFile(
                path="", sha256="", inputs=exported.inputs[role], outputs=exported.outputs[role]
            )
            for role in exported.paths
        }
        manifest = Manifest(
            name=name,
            version=next_version(Path(repo_root), name),
            kind=spec.kind,
            loop=spec.loop,
            description=description or spec.description,
            files=files,
            config=asdict(config),
            latent_dim=latent_dim,
            image=image,
            labels=labels or [],
            training=training,
            metrics={k: float(v) for k, v in metrics.items()},
            parity=exported.parity,
            tools=tool_versions(),
        )
        return publish(repo_root, manifest, exported.paths, extra)


def load_latest(repo_root: Path, name: str) -> tuple[nn.Module, Manifest] | None:
    """The PyTorch serving module of the latest published `name` and its manifest, or None."""
    repository = ModelRepository(repo_root)
    if not repository.versions(name):
        return None
    manifest = repository.resolve(name)
    return load_published(repository, manifest), manifest


def digit_training_record(dataset: str, x_train: np.ndarray, x_held: np.ndarray, seed: int, fit: Any,
                          **knobs: Any) -> dict[str, Any]:
    """`training_record` for the digit families, which all split as `digit_split` does."""
    return training_record(dataset, len(x_train), len(x_held),
                           f"stratified {DIGIT_HELDOUT_FRACTION:.0%}, seed {seed}", fit, seed=seed, **knobs)


def training_record(
    dataset: str, n_train: int, n_heldout: int, split: str, fit: Any, **knobs: Any
) -> dict[str, Any]:
    """The manifest's `training` entry: data, split, epochs, time, the last epoch's losses."""
    return {
        "dataset": dataset,
        "n_train": n_train,
        "n_heldout": n_heldout,
        "heldout_split": split,
        "epochs": len(fit.history),  # a resumed checkpoint may already hold more than asked
        "resumed_from_epoch": fit.resumed_from,
        "seconds": round(fit.seconds, 2),
        "final_losses": fit.history[-1] if fit.history else {},
        **knobs,
    }
