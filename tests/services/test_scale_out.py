"""Scale-out: two gateways and two workers on one queue still batch and stay correct."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from genserve.v1 import inference_pb2
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

pytestmark = pytest.mark.integration


def test_two_gateways_and_two_workers_batch_and_return_each_seed_its_images(repo: Path, redis_url: str):
    """64 concurrent seeded requests split over two gateways: batched, and byte-exact per seed."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    workers = [WorkerProcess(repo, redis_url, prefix) for _ in range(2)]
    try:
        with GatewayThread(distributed_settings(repo, redis_url, prefix)) as a, \
                GatewayThread(distributed_settings(repo, redis_url, prefix)) as b:
            a.wait_for_model("vae")
            b.wait_for_model("vae")
            seeds = list(range(500, 564))
            futures = [(a if i % 2 else b).inference.GenerateImages.future(
                inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=s), timeout=60)
                for i, s in enumerate(seeds)]
            together = [f.result().images.data for f in futures]
            alone = [a.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=s),
                                                timeout=60).images.data for s in seeds[:8]]
            assert together[:8] == alone
            for gw in (a, b):
                sizes = [n for s in gw.gateway.dispatcher.stats("vae:1") for n in s.requests_per_batch]
                assert max(sizes) > 1, "a gateway never batched"
    finally:
        for worker in workers:
            worker.stop()
