"""Request validation in the gateway: GenerateImages checks, RPC routing, deadlines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genserve.errors import DeadlineExceededError, InvalidArgumentError
from genserve.repository import ImageSpec, Manifest, OnnxFile
from genserve.services.validation import generate_images, require_rpc, timeout_from
from genserve.settings import LimitSettings
from genserve.tensors import from_wire, to_proto
from genserve.v1 import inference_pb2, tensor_pb2

LIMITS = LimitSettings(max_count=16)
DIGITS = [str(d) for d in range(10)]


def manifest(
    labels: list[str] | None = None, loop: str = "latent_sampler", kind: str = "vae"
) -> Manifest:
    return Manifest(
        name="vae",
        version="2",
        kind=kind,
        loop=loop,
        latent_dim=4,
        image=ImageSpec(channels=1, height=2, width=2),
        labels=labels or [],
        files={"model": OnnxFile(path="model.onnx", sha256="0" * 64, inputs=[], outputs=[])},
    )


def request(**fields: object) -> inference_pb2.GenerateImagesRequest:
    latents = fields.pop("latents", None)
    message = inference_pb2.GenerateImagesRequest(model="vae", **fields)
    if latents is not None:
        to_proto(np.asarray(latents), message.latents)
    return message


def invalid(message: inference_pb2.GenerateImagesRequest, model: Manifest | None = None) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        generate_images(message, model or manifest(), LIMITS)
    return str(info.value)


@pytest.mark.parametrize("count", [0, 17])
def test_count_out_of_bounds_says_what_is_allowed(count: int) -> None:
    """count outside 1..max_count is INVALID_ARGUMENT 'count must be 1..N, got X'."""
    assert invalid(request(count=count, seed=1)) == f"count must be 1..16, got {count}"


def test_valid_request_becomes_a_task_dict() -> None:
    """A valid request keeps count, seed, encoding flags and return_latents in its task dict."""
    params = generate_images(
        request(
            count=16,
            seed=5,
            encoding=inference_pb2.IMAGE_ENCODING_TENSOR_AND_PNG,
            return_latents=True,
        ),
        manifest(),
        LIMITS,
    )
    assert params.samples() == 16
    assert params.to_task() == {
        "count": 16,
        "seed": 5,
        "label": None,
        "latents": None,
        "tensor": True,
        "png": True,
        "return_latents": True,
        "first_index": 0,
    }


@pytest.mark.parametrize(
    "encoding, flags",
    [
        (inference_pb2.IMAGE_ENCODING_TENSOR, (True, False)),
        (inference_pb2.IMAGE_ENCODING_PNG, (False, True)),
    ],
)
def test_encoding_selects_tensor_and_png(encoding: int, flags: tuple[bool, bool]) -> None:
    """IMAGE_ENCODING_TENSOR asks for the tensor only, IMAGE_ENCODING_PNG for PNGs only."""
    params = generate_images(request(count=1, seed=1, encoding=encoding), manifest(), LIMITS)
    assert (params.tensor, params.png) == flags


def test_unknown_encoding_is_rejected() -> None:
    """An encoding number this server does not know is INVALID_ARGUMENT listing the known ones."""
    message = request(count=1)
    message.encoding = 7
    assert invalid(message) == "encoding must be one of [0, 1, 2], got 7"


def test_server_picks_a_63_bit_seed_when_unset() -> None:
    """Without a seed the server draws a random one below 2**63, different call to call."""
    seeds = {generate_images(request(count=1), manifest(), LIMITS).seed for _ in range(4)}
    assert len(seeds) == 4
    assert all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("seed", [0, 7, 2**64 - 1])
def test_client_seed_is_kept(seed: int) -> None:
    """A seed set by the client, 0 and the largest uint64 included, is used as given."""
    assert generate_images(request(count=1, seed=seed), manifest(), LIMITS).seed == seed


def test_latents_replace_count_and_travel_as_wire_tensor() -> None:
    """With latents and count 0 the count is the row count and the task carries the exact values."""
    z = np.arange(12, dtype=np.float32).reshape(3, 4)
    params = generate_images(request(latents=z, seed=1), manifest(), LIMITS)
    assert params.count == 3
    np.testing.assert_array_equal(from_wire(params.to_task()["latents"]), z)


def test_count_must_match_latent_rows() -> None:
    """A nonzero count that differs from the number of latent rows is rejected with both numbers."""
    z = np.zeros((3, 4), dtype=np.float32)
    assert (
        invalid(request(count=2, latents=z))
        == "count must be 0 or the number of latent rows (3), got 2"
    )
    assert generate_images(request(count=3, latents=z), manifest(), LIMITS).count == 3


def test_latents_must_be_two_dimensional_with_latent_dim_columns() -> None:
    """Latents of shape (n, 5) or (4,) for a 4-dim model are rejected with the expected shape."""
    assert (
        invalid(request(latents=np.zeros((2, 5), dtype=np.float32)))
        == "latents must have shape (n, 4), got (2, 5)"
    )
    assert (
        invalid(request(latents=np.zeros((2, 2, 4), dtype=np.float32)))
        == "latents must have shape (n, 4), got (2, 2, 4)"
    )


def test_latents_must_be_float32() -> None:
    """float16 latents are rejected, naming DTYPE_FLOAT32 and the dtype received."""
    assert (
        invalid(request(latents=np.zeros((2, 4), dtype=np.float16)))
        == "latents must be DTYPE_FLOAT32, got float16"
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_latents_must_be_finite(bad: float) -> None:
    """NaN or infinite latents are rejected."""
    z = np.zeros((2, 4), dtype=np.float32)
    z[1, 2] = bad
    assert invalid(request(latents=z)) == "latents must be finite (no NaN or infinity)"


def test_more_latent_rows_than_max_count_are_rejected() -> None:
    """Latents with more rows than max_count fail the count bound."""
    assert (
        invalid(request(latents=np.zeros((17, 4), dtype=np.float32)))
        == "count must be 1..16, got 17"
    )


def test_malformed_latent_tensor_names_the_field() -> None:
    """A latents Tensor whose bytes do not fit its shape fails with 'latents.data ...'."""
    message = request(count=2)
    message.latents.CopyFrom(
        tensor_pb2.Tensor(shape=[2, 4], dtype=tensor_pb2.DTYPE_FLOAT32, data=b"\0" * 4)
    )
    assert invalid(message).startswith("latents.data has 4 bytes")


def test_label_on_an_unconditional_model_is_rejected() -> None:
    """An unconditional model refuses a label and says to omit it."""
    assert (
        invalid(request(count=1, label=3))
        == "label: model vae:2 is not class-conditional; omit label"
    )


def test_conditional_model_requires_a_label() -> None:
    """A class-conditional model refuses a request without a label and gives the range."""
    assert (
        invalid(request(count=1), manifest(DIGITS))
        == "label: model vae:2 is class-conditional: label must be 0..9"
    )


@pytest.mark.parametrize("label", [-1, 10])
def test_conditional_label_out_of_range_is_rejected(label: int) -> None:
    """A label outside 0..len(labels)-1 is rejected with the range and the value."""
    assert (
        invalid(request(count=1, label=label), manifest(DIGITS))
        == f"label must be 0..9, got {label}"
    )


@pytest.mark.parametrize("label", [0, 9])
def test_conditional_label_in_range_is_kept(label: int) -> None:
    """Labels 0 and len(labels)-1 pass and reach the task dict."""
    params = generate_images(request(count=1, label=label), manifest(DIGITS), LIMITS)
    assert params.to_task()["label"] == label


def test_several_problems_are_reported_together() -> None:
    """A request with a bad count and a bad label gets both messages joined by '; '."""
    assert (
        invalid(request(count=0, label=1))
        == "count must be 1..16, got 0; label: model vae:2 is not class-conditional; omit label"
    )


def test_require_rpc_names_the_rpcs_the_model_serves() -> None:
    """Calling the wrong RPC says what the model is and which RPC it serves."""
    with pytest.raises(InvalidArgumentError) as info:
        require_rpc(manifest(), "Classify")
    assert (
        str(info.value)
        == "model vae:2 is a vae (latent_sampler); it serves GenerateImages, not Classify"
    )
    require_rpc(manifest(), "GenerateImages")  # the right RPC passes


def test_require_rpc_for_an_unknown_loop_says_no_rpc() -> None:
    """A model whose loop serves nothing is refused for every RPC."""
    with pytest.raises(InvalidArgumentError, match="it serves no RPC, not GenerateImages"):
        require_rpc(manifest(loop="diffusion", kind="ddpm"), "GenerateImages")


def test_generate_images_on_a_classifier_is_refused_before_other_checks() -> None:
    """GenerateImages on a classifier fails on the RPC, not on the count."""
    model = manifest(loop="image_classifier", kind="classifier")
    assert invalid(request(count=0), model).endswith("it serves Classify, not GenerateImages")


@pytest.mark.parametrize("remaining", [None, math.inf])
def test_timeout_defaults_when_the_client_set_no_deadline(remaining: float | None) -> None:
    """No deadline (None or infinity) gives the configured default."""
    assert timeout_from(remaining, 30.0) == 30.0


def test_timeout_is_the_remaining_time() -> None:
    """A positive remaining time is used as is."""
    assert timeout_from(1.25, 30.0) == 1.25


@pytest.mark.parametrize("remaining", [0.0, -0.5])
def test_expired_deadline_is_deadline_exceeded(remaining: float) -> None:
    """A deadline already passed on arrival raises DeadlineExceededError."""
    with pytest.raises(DeadlineExceededError, match="had passed when it arrived"):
        timeout_from(remaining, 30.0)
