"""The image builders end to end on tiny configs: train, measure, export, publish; resumable.

They run through the registry's builds, the same functions `genserve train/export <family>` and
`make models` call, with only the sizes turned down.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from genserve.export.core.checkpoint import CheckpointMismatchError
from genserve.export.core.options import BuildOptions, RunOptions
from genserve.export.core.training import FitResult
from genserve.export.families.dae.build import build_dae
from genserve.export.families.dae.model import DAEConfig
from genserve.export.families.dcgan.build import build_gan, train_gan
from genserve.export.families.dcgan.faces import build_faces
from genserve.export.families.dcgan.model import GANConfig
from genserve.export.families.digits.build import build_digits
from genserve.export.families.digits.model import CNNConfig
from genserve.export.registry import FAMILIES
from genserve.repository import ModelRepository

TINY_CNN = CNNConfig(widths=(4, 8), features=16)
TINY_GAN = GANConfig(latent_dim=8, features=4, aux_classes=10)
QUICK = RunOptions(limit=300, progress=False)


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding a tiny `digits` classifier, the judge of the digit generators."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("images")
    build_digits(root, config=TINY_CNN, epochs=1, run=QUICK)
    return root


def manifest_of(version_dir: Path) -> dict:
    return json.loads((version_dir / "manifest.json").read_text())


def test_classifier_is_published_with_labels_and_logits(judged: Path) -> None:
    """digits:1 serves image -> logits over labels "0".."9" with its held-out accuracy."""
    manifest = ModelRepository(judged).resolve("digits")
    assert (manifest.kind, manifest.loop) == ("cnn_classifier", "image_classifier")
    assert manifest.labels == [str(k) for k in range(10)]
    assert [(t.name, t.shape) for t in manifest.files["model"].outputs] == [("logits", [-1, 10])]
    assert 0.0 <= manifest.metrics["heldout_accuracy"] <= 1.0 and manifest.parity["model"] < 1e-4


def test_denoiser_is_published_with_psnr_at_both_noise_levels(tmp_path: Path) -> None:
    """The DAE's card holds noisy and denoised PSNR at sigma 0.3 and 0.5; its graph runs."""
    version = build_dae(tmp_path, config=DAEConfig(hidden=(4, 8), latent_dim=8), epochs=1, run=QUICK)
    manifest = manifest_of(version)
    assert (manifest["kind"], manifest["loop"]) == ("dae", "image_to_image")
    for sigma in ("0.3", "0.5"):
        gain = manifest["metrics"][f"psnr_denoised_sigma{sigma}"] - manifest["metrics"][f"psnr_noisy_sigma{sigma}"]
        assert gain == pytest.approx(manifest["metrics"][f"psnr_gain_sigma{sigma}"])
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(["denoised"], {"image": np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)})
    assert out.shape == (3, 1, 28, 28) and 0.0 <= out.min() and out.max() <= 1.0
    assert Image.open(version / "samples.png").size == (242, 182)  # 8 x 6 tiles of 28 + 2


@pytest.mark.parametrize("conditional", [False, True])
def test_digit_gan_is_judged_by_the_repositorys_classifier(judged: Path, conditional: bool) -> None:
    """FD and IS with their real references (and class accuracy when conditional) on the card;
    the default "gan" (a class mixture) takes z alone and lists no labels."""
    config = GANConfig(latent_dim=8, features=4, aux_classes=10, num_classes=10, label_from_latent=not conditional)
    name = "cgan" if conditional else "gan"
    version = build_gan(judged, name=name, config=config, epochs=1, run=QUICK, metric_samples=200)
    manifest = ModelRepository(judged).resolve(name)
    assert (manifest.kind, manifest.loop, manifest.latent_dim) == ("dcgan", "latent_sampler", 8)
    assert manifest.training["metrics_judge"] == "digits:1" and manifest.conditional == conditional
    expected = {"fd_digits", "fd_digits_real_vs_real", "inception_score", "inception_score_real"}
    assert set(manifest.metrics) == expected | ({"conditional_accuracy"} if conditional else set())
    assert 1.0 <= manifest.metrics["inception_score"] <= 10.0
    inputs = [t.name for t in manifest.files["model"].inputs]
    assert inputs == (["z", "label"] if conditional else ["z"])
    assert Image.open(version / "samples.png").size == ((302, 302) if conditional else (242, 242))


def test_face_gan_trains_on_a_folder_of_images(tmp_path: Path) -> None:
    """Any-size colour images in a folder become 25x25 grey faces; the card holds face FDs."""
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        pixels = (rng.random((40 + i, 30 + 2 * i, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"face{i:02d}.{'png' if i % 2 else 'jpg'}")
    version = build_faces(tmp_path / "repo", config=GANConfig(latent_dim=8, features=4, height=25, width=25),
                          epochs=1, batch_size=8, run=RunOptions(data_path=folder, progress=False),
                          metric_samples=100)
    manifest = manifest_of(version)
    assert manifest["image"]["height"] == manifest["image"]["width"] == 25
    assert manifest["training"]["n_train"] == 24 and manifest["training"]["n_heldout"] == 6
    assert {"fd_eigenfaces", "fd_eigenfaces_real_vs_real", "fd_hog", "nn_ratio"} <= set(manifest["metrics"])
    assert "fd_hog_nonfaces" not in manifest["metrics"]  # LFW's non-faces only go with LFW's faces


def gan_run(images: np.ndarray, labels: np.ndarray, epochs: int, checkpoint_dir: Path | None) -> FitResult:
    return train_gan(TINY_GAN, images, labels, epochs=epochs, batch_size=32, seed=0,
                     checkpoint_dir=checkpoint_dir, progress=False)


def test_gan_training_resumes_to_the_same_weights(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """2 epochs, then resumed to 3, equals 3 straight: both optimizers and the average included."""
    images, labels = digits[0][:128], digits[1][:128]
    straight = gan_run(images, labels, 3, None).model.state_dict()
    gan_run(images, labels, 2, tmp_path)
    resumed = gan_run(images, labels, 3, tmp_path)
    assert resumed.resumed_from == 2 and len(resumed.history) == 3
    state = resumed.model.state_dict()
    assert state.keys() == straight.keys() and all(torch.equal(state[k], straight[k]) for k in state)
    with pytest.raises(CheckpointMismatchError, match="belongs to another run"):
        gan_run(images[:96], labels[:96], 4, tmp_path)


def test_train_only_builders_publish_nothing(tmp_path: Path) -> None:
    """`genserve train dae` checkpoints and leaves the repository empty."""
    options = BuildOptions(repo_root=tmp_path / "repo", name="dae", checkpoint_dir=tmp_path / "ck",
                           epochs=1, limit=100, progress=False, train_only=True)
    assert FAMILIES["dae"].build(options) == tmp_path / "ck"
    assert (tmp_path / "ck" / "checkpoint.pt").is_file() and not (tmp_path / "repo").exists()


def test_vae_is_judged_like_the_gans_when_a_classifier_is_published(judged: Path) -> None:
    """A conditional VAE built beside `digits` gets FD, Inception score and class accuracy too."""
    from genserve.export.families.vae.build import build_vae
    from genserve.export.families.vae.model import VAEConfig

    build_vae(judged, name="cvae", config=VAEConfig(latent_dim=4, hidden=(32,), num_classes=10),
              epochs=1, limit=300, progress=False)
    manifest = ModelRepository(judged).resolve("cvae")
    assert {"heldout_neg_elbo_nats", "fd_digits", "inception_score", "conditional_accuracy"} <= set(manifest.metrics)
    assert manifest.training["metrics_judge"] == "digits:1"


def test_label_free_gan_never_reads_the_labels(judged: Path) -> None:
    """The self-conditioned GAN trains on k-means clusters: shuffled labels change nothing,
    it serves z alone with no labels, and the card says how it was stabilised."""
    config = GANConfig(latent_dim=8, features=4, num_classes=3, aux_classes=3, label_from_latent=True,
                       clusters=True, minibatch_std=True, augment="translation")
    images = torch.rand(64, 1, 28, 28).numpy()
    labels = np.arange(64) % 10
    a = train_gan(config, images, labels, epochs=1, batch_size=32, seed=0, checkpoint_dir=None, progress=False)
    b = train_gan(config, images, labels[::-1].copy(), epochs=1, batch_size=32, seed=0, checkpoint_dir=None,
                  progress=False)
    for x, y in zip(a.model.average.parameters(), b.model.average.parameters(), strict=True):
        assert torch.equal(x, y)
    build_gan(judged, name="gan", config=config, epochs=1, run=QUICK, metric_samples=200)
    manifest = ModelRepository(judged).resolve("gan")
    assert [t.name for t in manifest.files["model"].inputs] == ["z"] and manifest.labels == []
    assert "k-means" in manifest.training["stabilisation"] and "without labels" in manifest.description


def test_gan_mixture_is_registered_outside_the_zoo() -> None:
    """The class-mixture recipe keeps its own name; the default zoo does not build it."""
    family = FAMILIES["gan-mixture"]
    assert not family.in_zoo and family.build_ref.endswith(":build_mixture")


def test_the_conditional_gan_trains_longer_unless_epochs_are_given(tmp_path: Path, monkeypatch) -> None:
    """cgan's default is 48 epochs, the label-free gan's 36; --epochs overrides both."""
    from genserve.export.families.dcgan import build as dcgan_build

    asked: list[int] = []
    monkeypatch.setattr(dcgan_build, "build_gan", lambda root, **kw: asked.append(kw["epochs"]) or root)
    for conditional, epochs in ((True, None), (False, None), (True, 2)):
        dcgan_build.build(BuildOptions(repo_root=tmp_path, name="g", checkpoint_dir=tmp_path / "ck",
                                       conditional=conditional, epochs=epochs))
    assert asked == [dcgan_build.CONDITIONAL_DIGIT_EPOCHS, dcgan_build.DEFAULT_DIGIT_EPOCHS, 2]
    assert (dcgan_build.CONDITIONAL_DIGIT_EPOCHS, dcgan_build.DEFAULT_DIGIT_EPOCHS) == (48, 36)
