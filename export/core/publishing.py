"""Publishing any family: the one manifest builder, weights beside the graphs, sample grids.

Every family ends in `publish_version`: it reads the exported graphs' signatures back from the
files, fills the manifest fields every version has (kind, loop and description from the spec,
config, parity, tool versions) and takes the family's own fields (image, labels, preprocess,
training, metrics, serving hints, ...) as keywords. `publish_model` is the image families'
whole tail: export with parity, weights, grid, manifest, version. `load_published` rebuilds a
published version in PyTorch from its weights.
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
from PIL import Image
from torch import nn

import genserve
from genserve.export.core.onnx_export import OPSET, export_model, graph_signature
from genserve.export.core.spec import ModelSpec
from genserve.export.data.mnist import DIGIT_HELDOUT_FRACTION
from genserve.repository import (
    ImageSpec,
    Manifest,
    ModelRepository,
    OnnxFile,
    next_version,
    publish,
)

WEIGHTS = "weights.pt"  # PyTorch state dict + config, beside the ONNX files
GRID = "samples.png"  # sample images of the version, for people
TOKENIZER = "tokenizer.json"  # a text model's tokenizer, beside its graphs (manifest preprocess names it)


def tool_versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "genserve": genserve.__version__,
        "onnx_opset": str(OPSET),
    }


def save_weights(spec: ModelSpec, model: nn.Module, path: Path) -> Path:
    """The PyTorch weights with their config, so the exact model can be rebuilt (fine-tuning,
    PyTorch-eager baselines) from the repository alone."""
    torch.save({"kind": spec.kind, "config": asdict(model.config), "state_dict": model.state_dict()}, path)
    return path


def load_published(repository: ModelRepository, manifest: Manifest, role: str = "model") -> nn.Module:
    """Rebuild a published version in PyTorch and return the module behind graph `role`."""
    from genserve.export.registry import specs

    path = repository.root / manifest.name / manifest.version / WEIGHTS
    saved = torch.load(path, map_location="cpu", weights_only=True)
    spec = specs()[saved["kind"]]
    model = spec.build(spec.config_class(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return spec.graphs(model)[role].module


def load_latest(repo_root: Path, name: str) -> tuple[nn.Module, Manifest] | None:
    """The PyTorch serving module of the latest published `name` and its manifest, or None."""
    repository = ModelRepository(repo_root)
    if not repository.versions(name):
        return None
    manifest = repository.resolve(name)
    return load_published(repository, manifest), manifest


def publish_version(
    repo_root: Path,
    name: str,
    spec: ModelSpec,
    model: nn.Module,
    graphs: dict[str, Path],
    extra: dict[str, Path],
    *,
    parity: dict[str, float],
    description: str | None = None,
    tools: dict[str, str] | None = None,
    **fields: Any,
) -> Path:
    """Build the manifest of the next version of `name` and publish it with its files.

    `graphs` maps a role to its ONNX file (signatures are read back from it), `extra` the files
    beside them; `fields` are the family's own manifest fields (training, metrics, image, ...).
    """
    files = {}  # path and sha256 are filled in by publish()
    for role, path in graphs.items():
        inputs, outputs = graph_signature(path)
        files[role] = OnnxFile(path="", sha256="", inputs=inputs, outputs=outputs)
    manifest = Manifest(
        name=name,
        version=next_version(Path(repo_root), name),
        kind=spec.kind,
        loop=spec.loop,
        description=description or spec.description,
        files=files,
        config=asdict(model.config),
        parity=parity,
        tools=tool_versions() | (tools or {}),
        **fields,
    )
    return publish(repo_root, manifest, graphs, extra)


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
    with tempfile.TemporaryDirectory(prefix="genserve-export-") as tmp:
        exported = export_model(spec, model, Path(tmp))
        extra = {WEIGHTS: save_weights(spec, model, Path(tmp) / WEIGHTS)}
        if grid is not None:
            extra[GRID] = sample_grid_png(grid[0], Path(tmp) / "s.png", nrow=grid[1])
        return publish_version(
            repo_root, name, spec, model, exported.paths, extra, parity=exported.parity,
            description=description, latent_dim=latent_dim, image=image, labels=labels or [],
            training=training, metrics={k: float(v) for k, v in metrics.items()},
        )


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
        "precision": precision_record(fit.precision),
        **knobs,
    }


def precision_record(precision: str) -> str:
    """The manifest's words for a training run's precision (core/training.py's training_precision)."""
    if precision == "bf16":
        return "bf16 autocast (matmuls and convolutions in bfloat16; weights, optimizer and exported graph fp32)"
    return "fp32"


def sample_grid_png(images: np.ndarray | torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """Tile (N, C, H, W) images in [0, 1] into one PNG, nrow per row, 2 px black gutters."""
    array = (
        images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    )
    n, channels, height, width = array.shape
    rows = -(-n // nrow)  # ceil(n / nrow)
    pad = 2
    grid = np.zeros((channels, rows * (height + pad) + pad, nrow * (width + pad) + pad), np.float32)
    for i, image in enumerate(array):
        top = pad + (i // nrow) * (height + pad)
        left = pad + (i % nrow) * (width + pad)
        grid[:, top : top + height, left : left + width] = image
    pixels = (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    pil = Image.fromarray(pixels[0] if channels == 1 else pixels.transpose(1, 2, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)
    return path
