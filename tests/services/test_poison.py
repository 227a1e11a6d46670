"""Poison requests: a request that makes the model fail is isolated to itself. The others of
the same message get their results, the failing one INTERNAL with a short message, and the
worker keeps serving. The model is the tiny VAE with a guard that fails its Reshape whenever
a latent exceeds tests.support.POISON."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.tensors import from_wire, to_proto, to_wire
from genserve.v1 import inference_pb2
from genserve.workers.runtime import ModelCache
from genserve.workers.tasks import execute
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import POISON, GatewayThread, poisoned_copy


@pytest.fixture(scope="module")
def poison_repo(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("poison-repository")
    poisoned_copy(repo / "vae" / "1", root, "poison")
    return root


def poisoned_latents(count: int = 2) -> np.ndarray:
    z = np.zeros((count, 4), np.float32)
    z[-1, 0] = POISON * 10
    return z


def test_one_poisoned_request_fails_alone_inside_a_message(poison_repo: Path):
    """A message of [seeded, poisoned, seeded]: the stacked call fails, each request is retried
    alone; the seeded ones get the same bytes as when run by themselves, the poisoned one INTERNAL."""
    cache = ModelCache(ModelRepository(poison_repo), WorkerSettings(intra_op_threads=1))
    good = [{"count": 2, "seed": 1}, {"count": 3, "seed": 2}]
    payload = {"model": "poison", "op": "generate_images",
               "requests": [good[0], {"count": 2, "latents": to_wire(poisoned_latents())}, good[1]]}
    result = execute(payload, cache)
    first, bad, last = result["results"]
    assert bad["ok"] is False and bad["code"] == "INTERNAL" and len(bad["message"]) < 120
    alone = [execute({"model": "poison", "op": "generate_images", "requests": [g]}, cache)["results"][0] for g in good]
    assert from_wire(first["images"]).shape == (2, 1, 28, 28)
    assert first["images"] == alone[0]["images"] and last["images"] == alone[1]["images"]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_poisoned_request_through_a_real_worker_fails_alone_and_the_worker_keeps_serving(poison_repo: Path, redis_url: str):
    """Concurrent seeded and poisoned GenerateImages through the gateway and a `genserve worker`:
    the poisoned one gets INTERNAL with a short message, every seeded one its images, and the same
    worker process answers afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(poison_repo, redis_url, prefix)
    try:
        with GatewayThread(distributed_settings(poison_repo, redis_url, prefix)) as gw:
            gw.wait_for_model("poison")
            seeded = inference_pb2.GenerateImagesRequest(model="poison", count=2, seed=4)
            bad = inference_pb2.GenerateImagesRequest(model="poison", latents=to_proto(poisoned_latents()))
            expected = gw.inference.GenerateImages(seeded, timeout=30).images.data
            for _ in range(3):
                with ThreadPoolExecutor(8) as pool:
                    goods = [pool.submit(gw.inference.GenerateImages, seeded, timeout=30) for _ in range(6)]
                    poisoned = pool.submit(gw.inference.GenerateImages, bad, timeout=30)
                    assert all(g.result().images.data == expected for g in goods)
                    error = poisoned.exception()
                assert error is not None and error.code() == grpc.StatusCode.INTERNAL
                assert "worker error" in error.details() and len(error.details()) < 120
            assert gw.inference.GenerateImages(seeded, timeout=30).images.data == expected
            assert worker.process.poll() is None
    finally:
        worker.stop()
