"""End to end: build_vae trains, evaluates, exports and publishes a version workers can trust."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from genserve.export.families.vae.build import build_vae
from genserve.export.families.vae.model import VAEConfig
from genserve.repository import ModelRepository, sha256_file


def tiny_build(root: Path, config: VAEConfig, **kw) -> Path:
    options = {"epochs": 2, "batch_size": 32, "limit": 200, "progress": False}
    return build_vae(root, config=config, **{**options, **kw})


def test_build_publishes_a_verifiable_manifest(tmp_path: Path, tiny_config: VAEConfig) -> None:
    """Version 1 holds both graphs with matching sha256, finite metrics and a sample grid."""
    version_dir = tiny_build(tmp_path, tiny_config)
    assert version_dir == tmp_path / "vae" / "1"
    manifest = ModelRepository(tmp_path).resolve("vae")
    assert (manifest.kind, manifest.loop, manifest.version) == ("vae", "latent_sampler", "1")
    for role, name in (("model", "model.onnx"), ("encoder", "encoder.onnx"), ("decoder", "decoder.onnx")):
        assert manifest.files[role].path == name
        assert manifest.files[role].sha256 == sha256_file(version_dir / name)
    assert [t.name for t in manifest.files["model"].inputs] == ["z"]
    assert manifest.files["model"].outputs[0].shape == [-1, 1, 28, 28]
    assert manifest.latent_dim == 4 and manifest.labels == [] and not manifest.conditional
    assert (manifest.image.channels, manifest.image.height, manifest.image.width) == (1, 28, 28)
    assert set(manifest.metrics) == {
        "heldout_neg_elbo_nats",
        "heldout_recon_nats",
        "heldout_kl_nats",
    }
    assert all(math.isfinite(v) and v > 0 for v in manifest.metrics.values())
    assert set(manifest.parity) == {"model", "encoder", "decoder"} and max(manifest.parity.values()) < 1e-4
    assert manifest.training["n_train"] + manifest.training["n_heldout"] == 200
    assert manifest.training["epochs"] == 2 and manifest.training["seed"] == 0
    assert {"torch", "onnx", "onnxruntime", "genserve"} <= set(manifest.tools)
    assert VAEConfig(**manifest.config) == tiny_config
    assert Image.open(version_dir / "samples.png").size == (242, 242)  # 8 x 8 tiles of 28 + 2


def test_published_model_runs_in_onnx_runtime(tmp_path: Path, tiny_config: VAEConfig) -> None:
    """The verified serving graph decodes a batch of prior draws into images in [0, 1]."""
    tiny_build(tmp_path, tiny_config)
    repo = ModelRepository(tmp_path)
    path = repo.verified_path(repo.resolve("vae:1"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    (image,) = session.run(["image"], {"z": z})
    assert image.shape == (6, 1, 28, 28) and image.min() >= 0.0 and image.max() <= 1.0


def test_second_build_is_the_next_version(tmp_path: Path, tiny_config: VAEConfig) -> None:
    """Building again never touches version 1 and publishes version 2."""
    first = tiny_build(tmp_path, tiny_config)
    before = (first / "manifest.json").read_text()
    second = tiny_build(tmp_path, tiny_config, epochs=1)
    assert second == tmp_path / "vae" / "2"
    assert (first / "manifest.json").read_text() == before
    assert json.loads((second / "manifest.json").read_text())["training"]["epochs"] == 1


def test_conditional_build_lists_its_labels(
    tmp_path: Path, tiny_conditional_config: VAEConfig
) -> None:
    """A class-conditional VAE is published with labels "0".."9" and a `label` graph input."""
    tiny_build(tmp_path, tiny_conditional_config, name="cvae")
    manifest = ModelRepository(tmp_path).resolve("cvae")
    assert manifest.labels == [str(k) for k in range(10)] and manifest.conditional
    assert [(t.name, t.dtype) for t in manifest.files["model"].inputs] == [
        ("z", "float32"),
        ("label", "int64"),
    ]


def test_published_weights_rebuild_the_serving_module(tmp_path):
    """weights.pt beside the ONNX files rebuilds a decoder that matches the ONNX graph."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from genserve.export.core.publishing import load_published
    from genserve.export.families.vae.build import build_vae
    from genserve.export.families.vae.model import VAEConfig
    from genserve.repository import ModelRepository

    build_vae(tmp_path, config=VAEConfig(latent_dim=4, hidden=(16,)), epochs=1, limit=200, progress=False)
    repository = ModelRepository(tmp_path)
    manifest = repository.resolve("vae")
    decoder = load_published(repository, manifest)
    z = np.random.default_rng(0).standard_normal((3, 4), dtype=np.float32)
    with torch.inference_mode():
        eager = decoder(z=torch.from_numpy(z)).numpy()
    session = ort.InferenceSession(str(repository.verified_path(manifest)), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"z": z})[0], eager, atol=1e-5)


def test_mixture_prior_model_serves_one_more_latent_entry(tmp_path: Path) -> None:
    """A conv VAE with a fitted mixture prior publishes z of latent_dim + 1 entries (z[0]
    picks the component), both ELBOs, and a serving graph whose images match PyTorch's."""
    config = VAEConfig(latent_dim=4, hidden=(32,), arch="conv", features=8, prior_components=3)
    version_dir = tiny_build(tmp_path, config)
    manifest = ModelRepository(tmp_path).resolve("vae")
    assert manifest.latent_dim == 5 and manifest.files["model"].inputs[0].shape == [-1, 5]
    assert manifest.files["encoder"].outputs[0].shape == [-1, 4]
    assert manifest.files["decoder"].inputs[0].shape == [-1, 4]  # the bare decoder: no prior in front
    assert "heldout_neg_elbo_mixture_prior_nats" in manifest.metrics
    assert "Gaussian mixture" in manifest.training["prior"]
    assert max(manifest.parity.values()) < 1e-4
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    (image,) = session.run(["image"], {"z": z})
    assert image.shape == (6, 1, 28, 28) and image.min() >= 0.0 and image.max() <= 1.0
