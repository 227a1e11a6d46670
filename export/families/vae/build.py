"""Build a model version end to end: data -> split -> train -> evaluate -> export -> publish.

`build_vae` is what `genserve export vae` runs. Everything the serving side needs to trust the
result lands in the manifest: the ONNX signatures read back from the files, held-out metrics,
ONNX Runtime parity, the data and hyperparameters used, and tool versions.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

import genserve
from genserve.export.data.mnist import describe_source, load_mnist, train_heldout_split
from genserve.export.metrics.elbo import ElboReport, heldout_neg_elbo, sample_grid_png
from genserve.export.metrics.images import digit_generation_metrics
from genserve.export.families.vae.model import VAE, VAE_SPEC, VAEConfig
from genserve.export.core.onnx_export import OPSET, ExportResult, export_model
from genserve.export.families.vae.train import train_vae
from genserve.export.registry import FAMILIES, ModelSpec
from genserve.repository import ImageSpec, Manifest, ModelRepository, OnnxFile, next_version, publish

# Defaults: the full build (4,500 training digits) takes about a minute on 2 CPU cores.
DEFAULT_EPOCHS = 50
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 1e-3
HELDOUT_FRACTION = 0.1
GRID_SAMPLES = 64  # prior samples in samples.png, 8 per row
WEIGHTS = "weights.pt"  # PyTorch state dict + config, beside the ONNX files
JUDGE = "digits"  # the repository's digit classifier, when present, judges the prior samples
JUDGED_SAMPLES = 2000


def build_vae(
    repo_root: Path,
    *,
    name: str = "vae",
    config: VAEConfig | None = None,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    data_path: Path | None = None,
    limit: int | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train, evaluate, export and publish the next version of `name`; returns its directory."""
    config = config or VAEConfig()
    images, labels = load_mnist(data_path, limit=limit, seed=seed)
    x_train, y_train, x_held, y_held = train_heldout_split(images, labels, HELDOUT_FRACTION, seed)
    result = train_vae(
        config,
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    report = heldout_neg_elbo(result.model, x_held, y_held, seed=seed)
    generation, judge = judged_samples(repo_root, result.model, x_held, x_train, seed)
    dataset = describe_source(data_path) + ("" if limit is None else f", {limit} digits")
    training = {
        "dataset": dataset,
        "n_train": len(y_train),
        "n_heldout": len(y_held),
        "heldout_split": f"stratified {HELDOUT_FRACTION:.0%}, seed {seed}",
        "epochs": len(result.history),  # a resumed checkpoint may already hold more than asked
        "resumed_from_epoch": result.resumed_from,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": "Adam",
        "seed": seed,
        "seconds": round(result.seconds, 2),
        "final_train_loss_nats": result.history[-1] if result.history else None,
        **({"metrics_judge": judge} if judge else {}),
    }
    with tempfile.TemporaryDirectory(prefix="genserve-export-") as tmp:
        exported = export_model(VAE_SPEC, result.model, Path(tmp))
        grid = sample_grid_png(prior_samples(result.model, GRID_SAMPLES, seed), Path(tmp) / "s.png")
        weights = save_weights(VAE_SPEC, config, result.model, Path(tmp) / WEIGHTS)
        version = next_version(Path(repo_root), name)
        manifest = vae_manifest(name, version, config, exported, report, training)
        manifest.metrics.update(generation)
        return publish(repo_root, manifest, exported.paths, {"samples.png": grid, WEIGHTS: weights})


def save_weights(spec: ModelSpec, config: Any, model: torch.nn.Module, path: Path) -> Path:
    """The PyTorch weights with their config, so the exact model can be rebuilt (fine-tuning,
    PyTorch-eager baselines) from the repository alone."""
    torch.save({"kind": spec.kind, "config": asdict(config), "state_dict": model.state_dict()}, path)
    return path


def load_published(repository: ModelRepository, manifest: Manifest, role: str = "model") -> torch.nn.Module:
    """Rebuild a published version in PyTorch and return the module behind graph `role`."""
    path = repository.root / manifest.name / manifest.version / WEIGHTS
    saved = torch.load(path, map_location="cpu", weights_only=True)
    spec = FAMILIES[saved["kind"]]
    model = spec.build(spec.config_class(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return spec.graphs(model)[role].module


def train_vae_only(
    config: VAEConfig,
    *,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    data_path: Path | None = None,
    limit: int | None = None,
    checkpoint_dir: Path,
    progress: bool = True,
) -> Path:
    """Train (resuming), checkpoint every epoch, publish nothing; returns the checkpoint dir."""
    images, labels = load_mnist(data_path, limit=limit, seed=seed)
    x_train, y_train, _, _ = train_heldout_split(images, labels, HELDOUT_FRACTION, seed)
    train_vae(config, x_train, y_train, epochs=epochs, batch_size=DEFAULT_BATCH_SIZE, lr=DEFAULT_LR,
              seed=seed, checkpoint_dir=checkpoint_dir, progress=progress)
    return Path(checkpoint_dir)


def judged_samples(
    repo_root: Path, model: VAE, x_held: np.ndarray, x_train: np.ndarray, seed: int
) -> tuple[dict[str, float], str | None]:
    """Generation metrics of 2,000 prior samples (FD, Inception score, and class accuracy when
    conditional; metrics.py), judged by the repository's digit classifier as the GANs are, and
    that classifier's reference; nothing when the repository has no `digits` model yet."""
    repository = ModelRepository(repo_root)
    if not repository.versions(JUDGE):
        return {}, None
    judge = repository.resolve(JUDGE)
    samples = prior_samples(model, JUDGED_SAMPLES, seed)
    classes = model.config.num_classes
    requested = np.arange(JUDGED_SAMPLES) % classes if classes else None
    metrics = digit_generation_metrics(load_published(repository, judge), samples, x_held, x_train, requested)
    return metrics, judge.ref


def prior_samples(model: VAE, n: int, seed: int) -> torch.Tensor:
    """n decoded prior draws (n, C, H, W); a conditional model cycles through its classes."""
    classes = model.config.num_classes
    label = torch.arange(n) % classes if classes else None
    return model.sample(n, label, torch.Generator().manual_seed(seed))


def vae_manifest(
    name: str,
    version: str,
    config: VAEConfig,
    exported: ExportResult,
    report: ElboReport,
    training: dict[str, Any],
) -> Manifest:
    """The manifest of one VAE version."""
    files = {  # path and sha256 are filled in by publish()
        role: OnnxFile(
            path="", sha256="", inputs=exported.inputs[role], outputs=exported.outputs[role]
        )
        for role in exported.paths
    }
    return Manifest(
        name=name,
        version=version,
        kind=VAE_SPEC.kind,
        loop=VAE_SPEC.loop,
        description=VAE_SPEC.description,
        files=files,
        config=asdict(config),
        latent_dim=config.latent_dim,
        image=ImageSpec(channels=config.channels, height=config.height, width=config.width),
        labels=[str(k) for k in range(config.num_classes)],
        training=training,
        metrics=report.metrics(),
        parity=exported.parity,
        tools=tool_versions(),
    )


def tool_versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "genserve": genserve.__version__,
        "onnx_opset": str(OPSET),
    }
