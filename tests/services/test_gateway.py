"""The gateway against the real thing: Redis, a `genserve worker` process, gRPC on loopback."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genserve.tensors import from_proto, to_proto
from genserve.v1 import inference_pb2, jobs_pb2, jobs_pb2_grpc, models_pb2

pytestmark = pytest.mark.integration


def generate(gw, **fields) -> inference_pb2.GenerateImagesResponse:
    return gw.inference.GenerateImages(inference_pb2.GenerateImagesRequest(**fields), timeout=30)


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_round_trip_returns_images_of_the_manifest_shape(gateway):
    """64 images come back as float32 (64, 1, 28, 28) in [0, 1] with the seed and version."""
    response = generate(gateway, model="vae", count=64, seed=7)
    images = from_proto(response.images)
    assert images.shape == (64, 1, 28, 28) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.01
    assert response.seed == 7 and response.model == "vae:1"


def test_same_seed_gives_same_bytes(gateway):
    """A seeded request is reproducible call after call."""
    first = generate(gateway, model="vae", count=8, seed=123).images.data
    assert generate(gateway, model="vae", count=8, seed=123).images.data == first
    assert generate(gateway, model="vae", count=8, seed=124).images.data != first


def test_unseeded_request_returns_a_seed_that_regenerates_it(gateway):
    """Without a seed the server picks one, returns it, and it reproduces the output."""
    response = generate(gateway, model="vae", count=4)
    again = generate(gateway, model="vae", count=4, seed=response.seed)
    assert again.images.data == response.images.data


def test_seeded_request_is_batch_invariant(gateway):
    """A seeded request gives the same bytes alone as inside a batch of 64 concurrent requests."""
    alone = generate(gateway, model="vae", count=1, seed=42).images.data
    requests = [inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=s) for s in range(1000, 1063)]
    requests.insert(31, inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=42))
    futures = [gateway.inference.GenerateImages.future(r, timeout=30) for r in requests]
    results = [f.result() for f in futures]
    assert results[31].images.data == alone
    stats = gateway.gateway.dispatcher.stats("vae:1")
    assert max(n for s in stats for n in s.requests_per_batch) > 1, "the 64 requests were never batched"


def test_explicit_latents_are_decoded_and_returned(gateway):
    """Client latents replace the draw; return_latents echoes them."""
    z = np.random.default_rng(0).standard_normal((3, 4), dtype=np.float32)
    response = generate(gateway, model="vae", latents=to_proto(z), return_latents=True)
    assert from_proto(response.images).shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(from_proto(response.latents), z)


def test_png_encoding_returns_one_png_per_image(gateway):
    """PNG-only responses carry decodable 28x28 PNGs and no tensor."""
    response = generate(gateway, model="vae", count=3, seed=1, encoding=inference_pb2.IMAGE_ENCODING_PNG)
    assert len(response.png) == 3 and not response.images.data
    assert all(p.startswith(b"\x89PNG") for p in response.png)


def test_conditional_model_takes_a_label(gateway):
    """A class-conditional VAE generates for a label and refuses a request without one."""
    response = generate(gateway, model="cvae", count=2, seed=1, label=7)
    assert from_proto(response.images).shape == (2, 1, 28, 28)
    code, message = status_of(lambda: generate(gateway, model="cvae", count=2, seed=1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "label must be 0..9" in message


@pytest.mark.parametrize(
    ("fields", "code", "needle"),
    [
        ({"model": "vae", "count": 0}, grpc.StatusCode.INVALID_ARGUMENT, "count must be 1..4096, got 0"),
        ({"model": "vae", "count": 10**9}, grpc.StatusCode.INVALID_ARGUMENT, "count must be 1..4096, got 1000000000"),
        ({"model": "nosuch", "count": 1}, grpc.StatusCode.NOT_FOUND, "available models: cvae, vae"),
        ({"model": "vae:9", "count": 1}, grpc.StatusCode.NOT_FOUND, "has no version 9"),
        ({"model": "../etc", "count": 1}, grpc.StatusCode.INVALID_ARGUMENT, "model name must match"),
        ({"model": "vae", "count": 1, "label": 3}, grpc.StatusCode.INVALID_ARGUMENT, "not class-conditional"),
    ],
)
def test_bad_requests_get_the_right_status_and_say_what_is_allowed(gateway, fields, code, needle):
    """Each bad request maps to its status with a message naming the allowed values."""
    got, message = status_of(lambda: generate(gateway, **fields))
    assert got == code and needle in message
    assert generate(gateway, model="vae", count=1, seed=1).images.data  # still serving


def test_wrong_latent_shape_and_nan_latents_are_invalid(gateway):
    """Latents must be (n, latent_dim) and finite."""
    wrong = to_proto(np.zeros((2, 5), dtype=np.float32))
    code, message = status_of(lambda: generate(gateway, model="vae", latents=wrong))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "shape (n, 4)" in message
    nan = np.zeros((2, 4), dtype=np.float32)
    nan[1, 2] = math.nan
    code, message = status_of(lambda: generate(gateway, model="vae", latents=to_proto(nan)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "finite" in message
    truncated = inference_pb2.GenerateImagesRequest(model="vae")
    truncated.latents.shape[:] = [2, 4]
    truncated.latents.dtype = 1
    truncated.latents.data = b"\0" * 7
    code, message = status_of(lambda: gateway.inference.GenerateImages(truncated, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "needs 32" in message


def test_rpc_a_model_does_not_serve_is_invalid_and_an_empty_job_is_invalid(gateway):
    """Denoise on a VAE names the RPC it serves; a SubmitJob without a job names the kinds."""
    code, message = status_of(lambda: gateway.inference.Denoise(inference_pb2.DenoiseRequest(model="vae"), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "serves GenerateImages" in message
    jobs = jobs_pb2_grpc.JobServiceStub(gateway.channel)
    code, message = status_of(lambda: jobs.SubmitJob(jobs_pb2.SubmitJobRequest(), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "generate_images or input_file" in message


def test_expired_deadline_is_deadline_exceeded(gateway):
    """A deadline shorter than the work answers DEADLINE_EXCEEDED, and the service goes on."""
    request = inference_pb2.GenerateImagesRequest(model="vae", count=4096, seed=1)
    code, _ = status_of(lambda: gateway.inference.GenerateImages(request, timeout=0.001))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert generate(gateway, model="vae", count=1, seed=1).images.data


def test_models_are_listed_with_the_provider_a_worker_reported(gateway):
    """ListModels shows both models; GetModel reports the worker's execution provider."""
    names = [m.name for m in gateway.models.ListModels(models_pb2.ListModelsRequest(), timeout=5).models]
    assert names == ["cvae", "vae"]
    info = gateway.models.GetModel(models_pb2.GetModelRequest(model="vae"), timeout=5)
    assert info.execution_provider == "CPUExecutionProvider"
    assert info.latent_dim == 4 and info.rpcs == ["GenerateImages", "EncodeImages"] and len(info.sha256) == 64
    assert math.isfinite(info.metrics["heldout_neg_elbo_nats"])


def test_health_reports_serving(gateway):
    """grpc.health.v1 answers SERVING for the server and each service."""
    stub = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", "genserve.v1.InferenceService"):
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_concurrent_clients_all_get_their_own_results(gateway):
    """Many threads with different seeds each get the images their seed defines."""
    def call(seed: int) -> bytes:
        return generate(gateway, model="vae", count=2, seed=seed).images.data

    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(call, range(48)))
    assert together == [call(seed) for seed in range(48)]
