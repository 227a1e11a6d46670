"""EncodeImages validation in the gateway: images as Denoise takes them, labels, graphs, limits."""

from __future__ import annotations

import numpy as np
import pytest

from genserve.errors import FailedPreconditionError, InvalidArgumentError
from genserve.repository import ImageSpec, Manifest, OnnxFile
from genserve.services.validation import encode_images
from genserve.settings import LimitSettings
from genserve.tensors import from_wire, png_encode, to_proto
from genserve.v1 import inference_pb2

LIMITS = LimitSettings(max_images=8)
DIGITS = [str(d) for d in range(10)]


def manifest(roles: tuple[str, ...] = ("model", "encoder", "decoder"), labels: list[str] | None = None,
             loop: str = "latent_sampler") -> Manifest:
    graph = OnnxFile(path="x.onnx", sha256="0" * 64, inputs=[], outputs=[])
    return Manifest(name="vae", version="3", kind="vae", loop=loop, latent_dim=5,
                    image=ImageSpec(channels=1, height=2, width=2), labels=labels or [],
                    files={role: graph for role in roles})


def request(images: object = None, **fields: object) -> inference_pb2.EncodeImagesRequest:
    message = inference_pb2.EncodeImagesRequest(model="vae", **fields)
    if images is not None:
        to_proto(np.asarray(images), message.images)
    return message


def pixels(n: int) -> np.ndarray:
    return np.random.default_rng(n).random((n, 1, 2, 2), dtype=np.float32)


def invalid(message: inference_pb2.EncodeImagesRequest, model: Manifest | None = None) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        encode_images(message, model or manifest(), LIMITS)
    return str(info.value)


def test_valid_request_becomes_the_worker_task() -> None:
    """Images pass as float32 (one channel may come as (N, H, W)); the flags travel as asked."""
    x = pixels(3)
    task = encode_images(request(x[:, 0], reconstruct=True, encoding=inference_pb2.IMAGE_ENCODING_PNG),
                         manifest(), LIMITS).to_task()
    np.testing.assert_array_equal(from_wire(task["images"]), x)
    assert (task["reconstruct"], task["tensor"], task["png"]) == (True, False, True) and "labels" not in task


def test_pngs_are_accepted_like_denoise() -> None:
    """One PNG per image, when the tensor is empty."""
    x = pixels(2)
    message = inference_pb2.EncodeImagesRequest(model="vae", png=[png_encode(image) for image in x])
    params = encode_images(message, manifest(), LIMITS)
    assert params.images.shape == (2, 1, 2, 2) and params.samples() == 2


@pytest.mark.parametrize("images,needle", [
    (np.zeros((2, 1, 3, 2), np.float32), "images must have shape (n, 1, 2, 2), got (2, 1, 3, 2)"),
    (np.zeros((2, 4), np.float32), "images must have shape (n, 1, 2, 2)"),
    (np.zeros((2, 1, 2, 2), np.int64), "images must be DTYPE_FLOAT32, got int64"),
    (np.full((1, 1, 2, 2), np.nan, np.float32), "images must be finite"),
    (np.zeros((9, 1, 2, 2), np.float32), "the number of images must be 1..8, got 9"),
])
def test_wrong_images_are_invalid_arguments(images: np.ndarray, needle: str) -> None:
    """Shapes, dtypes, NaN and the max_images limit, each named in the message."""
    assert needle in invalid(request(images))


def test_no_images_and_unknown_encoding_are_invalid() -> None:
    """Nothing to encode, or an encoding enum outside the three."""
    assert "give images as a tensor or as PNGs" in invalid(request())
    assert "encoding must be one of [0, 1, 2], got 7" in invalid(request(pixels(1), encoding=7))


def test_labels_follow_the_model() -> None:
    """A conditional model needs one label per image or one for all; an unconditional one none."""
    conditional = manifest(labels=DIGITS)
    assert encode_images(request(pixels(3), labels=[4]), conditional, LIMITS).to_task()["labels"] == [4, 4, 4]
    assert encode_images(request(pixels(2), labels=[1, 9]), conditional, LIMITS).to_task()["labels"] == [1, 9]
    assert "is class-conditional: give labels (0..9)" in invalid(request(pixels(2)), conditional)
    assert "labels must hold 1 or 2 entries (one per image), got 3" in invalid(request(pixels(2), labels=[1, 2, 3]), conditional)
    assert "labels must be 0..9, got 10" in invalid(request(pixels(1), labels=[10]), conditional)
    assert "labels must be 0..9, got -1" in invalid(request(pixels(1), labels=[-1]), conditional)
    assert "not class-conditional; omit labels" in invalid(request(pixels(1), labels=[0]))


def test_versions_without_the_graphs_fail_their_precondition() -> None:
    """No encoder (a GAN, an old export): FAILED_PRECONDITION naming it; no bare decoder: encoding
    still passes, reconstruction fails its precondition."""
    with pytest.raises(FailedPreconditionError, match="model vae:3 has no 'encoder' graph .*its graphs: model"):
        encode_images(request(pixels(1)), manifest(("model",)), LIMITS)
    older = manifest(("model", "encoder"))
    assert encode_images(request(pixels(1)), older, LIMITS).reconstruct is False
    with pytest.raises(FailedPreconditionError, match="no 'decoder' graph \\(EncodeImages with reconstruct needs one"):
        encode_images(request(pixels(1), reconstruct=True), older, LIMITS)


def test_other_loops_do_not_serve_encode_images() -> None:
    """A denoiser is an image_to_image model: INVALID_ARGUMENT listing what it serves."""
    message = invalid(request(pixels(1)), manifest(loop="image_to_image"))
    assert message == "model vae:3 is a vae (image_to_image); it serves Denoise, not EncodeImages"
