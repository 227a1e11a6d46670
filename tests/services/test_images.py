"""The image models through the gateway: Redis, a `genserve worker` process, gRPC on loopback.

Tiny digits/dae/gan/cgan models are trained in seconds by the real builders (tests/support.py),
on 2,000 packaged digits; the digits used here are that split's held-out ones.
"""

from __future__ import annotations

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from genserve.repository import ModelRepository
from genserve.tensors import from_proto, png_decode, png_encode, to_proto
from genserve.v1 import inference_pb2, models_pb2
from genserve.workers.loops.images import sample_latents
from tests.support import TINY_DIGITS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def heldout() -> tuple[np.ndarray, np.ndarray]:
    """Held-out digits of the tiny models' split: never trained on."""
    from genserve.export.data.mnist import digit_split

    _, _, images, labels, _ = digit_split(None, TINY_DIGITS, 0)
    pick = np.random.default_rng(0).permutation(len(labels))[:60]
    return images[pick], labels[pick]


def psnr(clean: np.ndarray, image: np.ndarray) -> float:
    return float(np.mean(10 * np.log10(1.0 / ((clean - image) ** 2).reshape(len(clean), -1).mean(axis=1))))


def direct(image_repo, model: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The model's published graph run here, without the service."""
    repository = ModelRepository(image_repo)
    session = ort.InferenceSession(str(repository.verified_path(repository.resolve(model))), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def generate(gw, **fields) -> np.ndarray:
    return from_proto(gw.inference.GenerateImages(inference_pb2.GenerateImagesRequest(**fields), timeout=30).images)


def test_denoise_raises_the_psnr_of_noisy_digits(image_gateway, heldout) -> None:
    """Held-out digits with sigma 0.5 noise come back closer to the clean digits, by > 1 dB."""
    clean = heldout[0][:16]
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 0.5, clean.shape), 0, 1).astype(np.float32)
    response = image_gateway.inference.Denoise(inference_pb2.DenoiseRequest(model="dae", images=to_proto(noisy)), timeout=30)
    denoised = from_proto(response.images)
    assert denoised.shape == clean.shape and response.model == "dae:1"
    assert psnr(clean, denoised) > psnr(clean, noisy) + 1.0


def test_denoise_takes_and_returns_pngs(image_gateway, heldout) -> None:
    """PNG in, PNG out: 28x28 grey, equal to the tensor answer up to 8-bit rounding."""
    clean = heldout[0][:3]
    pngs = [png_encode(image) for image in clean]
    both = inference_pb2.IMAGE_ENCODING_TENSOR_AND_PNG
    response = image_gateway.inference.Denoise(inference_pb2.DenoiseRequest(model="dae", png=pngs, encoding=both), timeout=30)
    tensor = from_proto(response.images)
    decoded = np.stack([png_decode(p, 1, "png") for p in response.png])
    assert decoded.shape == (3, 1, 28, 28)
    np.testing.assert_allclose(decoded, tensor, atol=1 / 255 + 1e-6)


def test_classify_recognises_real_digits(image_gateway, heldout) -> None:
    """Most held-out digits get their own label first; top_k labels come with sorted probabilities."""
    images, labels = heldout
    response = image_gateway.inference.Classify(
        inference_pb2.ClassifyRequest(model="digits", images=to_proto(images), top_k=3), timeout=30)
    assert len(response.predictions) == len(labels)
    best = np.array([int(p.top[0].label) for p in response.predictions])
    assert (best == labels).mean() >= 0.7
    for prediction in response.predictions:
        scores = [t.score for t in prediction.top]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        assert all(t.label == str(t.index) for t in prediction.top)


def test_gan_generates_the_same_digits_for_the_same_seed(image_gateway, image_repo) -> None:
    """A seed fixes the images (equal to the published graph on that seed's latents); another seed differs."""
    first = generate(image_gateway, model="gan", count=8, seed=5)
    assert first.shape == (8, 1, 28, 28) and 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(generate(image_gateway, model="gan", count=8, seed=5), first)
    assert not np.array_equal(generate(image_gateway, model="gan", count=8, seed=6), first)
    expected = direct(image_repo, "gan", {"z": sample_latents(5, 8, 8)})
    np.testing.assert_allclose(first, expected, atol=1e-6)


def test_conditional_gan_generates_the_requested_class(image_gateway, image_repo) -> None:
    """cgan feeds the requested label to its graph; it needs one, and the mixture gan takes none."""
    threes = generate(image_gateway, model="cgan", count=4, seed=9, label=3)
    sevens = generate(image_gateway, model="cgan", count=4, seed=9, label=7)
    assert not np.array_equal(threes, sevens)
    z = sample_latents(9, 4, 8)
    np.testing.assert_allclose(threes, direct(image_repo, "cgan", {"z": z, "label": np.full(4, 3)}), atol=1e-6)
    for fields, needle in (({"model": "cgan", "count": 1}, "label must be 0..9"),
                           ({"model": "cgan", "count": 1, "label": 10}, "label must be 0..9"),
                           ({"model": "gan", "count": 1, "label": 3}, "not class-conditional")):
        with pytest.raises(grpc.RpcError) as info:
            generate(image_gateway, **fields)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in info.value.details()


def test_image_models_are_listed_with_their_rpcs_and_metrics(image_gateway) -> None:
    """GetModel tells which RPC each image model serves and shows its measured metrics."""
    expected = {"digits": ("Classify", "heldout_accuracy"), "dae": ("Denoise", "psnr_gain_sigma0.5"),
                "gan": ("GenerateImages", "inception_score"), "cgan": ("GenerateImages", "conditional_accuracy")}
    for model, (rpc, metric) in expected.items():
        info = image_gateway.models.GetModel(models_pb2.GetModelRequest(model=model), timeout=5)
        assert list(info.rpcs) == [rpc] and np.isfinite(info.metrics[metric])
