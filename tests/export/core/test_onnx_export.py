"""ONNX export: graph signatures the worker relies on, metadata, and runtime parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from genserve.export.core.onnx_export import (
    PARITY_ATOL,
    OnnxParityError,
    check_parity,
    export_model,
    read_metadata,
)
from genserve.export.families.vae.model import VAE, VAEConfig
from genserve.export.registry import specs


def signature(specs: list) -> list[tuple[str, list[int], str]]:
    return [(s.name, s.shape, s.dtype) for s in specs]


def export_tiny(config: VAEConfig, out_dir: Path):
    return export_model(specs()["vae"], VAE(config), out_dir)


def test_unconditional_graphs_have_the_serving_signatures(
    tmp_path: Path, tiny_config: VAEConfig
) -> None:
    """model: z -> image, encoder: image -> mu, logvar, decoder: latent -> image; float32,
    dynamic batch as -1."""
    result = export_tiny(tiny_config, tmp_path)
    assert result.paths == {"model": tmp_path / "model.onnx", "encoder": tmp_path / "encoder.onnx",
                            "decoder": tmp_path / "decoder.onnx"}
    assert signature(result.inputs["decoder"]) == [("latent", [-1, 4], "float32")]
    assert signature(result.outputs["decoder"]) == [("image", [-1, 1, 28, 28], "float32")]
    assert signature(result.inputs["model"]) == [("z", [-1, 4], "float32")]
    assert signature(result.outputs["model"]) == [("image", [-1, 1, 28, 28], "float32")]
    assert signature(result.inputs["encoder"]) == [("image", [-1, 1, 28, 28], "float32")]
    assert signature(result.outputs["encoder"]) == [
        ("mu", [-1, 4], "float32"),
        ("logvar", [-1, 4], "float32"),
    ]


def test_conditional_graphs_take_an_int64_label(
    tmp_path: Path, tiny_conditional_config: VAEConfig
) -> None:
    """A class-conditional VAE exports `label` int64 [-1] on both graphs, after z / image."""
    result = export_tiny(tiny_conditional_config, tmp_path)
    assert signature(result.inputs["model"]) == [
        ("z", [-1, 4], "float32"),
        ("label", [-1], "int64"),
    ]
    assert signature(result.inputs["encoder"]) == [
        ("image", [-1, 1, 28, 28], "float32"),
        ("label", [-1], "int64"),
    ]
    session = ort.InferenceSession(str(result.paths["model"]), providers=["CPUExecutionProvider"])
    z = np.zeros((2, 4), np.float32)
    (image,) = session.run(["image"], {"z": z, "label": np.array([1, 8], np.int64)})
    assert image.shape == (2, 1, 28, 28)
    assert not np.allclose(image[0], image[1])  # the label changes the digit


def test_onnx_runtime_matches_pytorch_at_several_batch_sizes(
    tmp_path: Path, tiny_config: VAEConfig
) -> None:
    """Decoding the same z in ONNX Runtime and PyTorch agrees within the parity tolerance."""
    model = VAE(tiny_config).eval()
    result = export_model(specs()["vae"], model, tmp_path)
    assert all(0.0 <= diff <= PARITY_ATOL for diff in result.parity.values())
    session = ort.InferenceSession(str(result.paths["model"]), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 130):
        z = torch.randn(batch, tiny_config.latent_dim)
        (image,) = session.run(["image"], {"z": z.numpy()})
        with torch.no_grad():
            expected = model.decoder(z).numpy()
        assert image.shape == (batch, 1, 28, 28)
        np.testing.assert_allclose(image, expected, rtol=0, atol=PARITY_ATOL)
        assert 0.0 <= image.min() and image.max() <= 1.0


def test_metadata_names_kind_loop_and_config(tmp_path: Path, tiny_config: VAEConfig) -> None:
    """Both files carry genserve.kind, genserve.loop and the config as JSON."""
    result = export_tiny(tiny_config, tmp_path)
    for role, path in result.paths.items():
        meta = read_metadata(path)
        assert meta["genserve.kind"] == "vae"
        assert meta["genserve.loop"] == "latent_sampler"
        assert meta["genserve.role"] == role
        assert VAEConfig(**json.loads(meta["genserve.config"])) == tiny_config


def test_parity_check_fails_when_onnx_and_torch_disagree(
    tmp_path: Path, tiny_config: VAEConfig
) -> None:
    """Changing the PyTorch weights after export makes the check raise with the measured diff."""
    model = VAE(tiny_config).eval()
    result = export_model(specs()["vae"], model, tmp_path)
    graph = specs()["vae"].graphs(model)["model"]
    with torch.no_grad():
        model.decoder.head.bias.add_(0.5)
    with pytest.raises(OnnxParityError, match=r"differs from PyTorch by 0\.\d+"):
        check_parity(graph, result.paths["model"], (1, 4), PARITY_ATOL)
