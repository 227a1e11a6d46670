"""Hot models: a model published while a worker runs is served without restarting anything."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from genserve.v1 import inference_pb2, models_pb2
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread, tiny_vae

pytestmark = pytest.mark.integration


def generate(gateway: GatewayThread, model: str) -> np.ndarray:
    from genserve.tensors import from_proto

    request = inference_pb2.GenerateImagesRequest(model=model, count=2, seed=7)
    return from_proto(gateway.inference.GenerateImages(request, timeout=30).images, "images")


def test_worker_serves_a_model_published_after_it_started(tmp_path: Path, redis_url: str):
    """A worker started on an empty repository serves `hot` (v1, then v2 beside it) once published."""
    pytest.importorskip("torch")
    repository = tmp_path / "repository"
    repository.mkdir()
    prefix = f"hot-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(repository, redis_url, prefix, env={"GENSERVE_WORKER__MODEL_SCAN_S": "0.5"})
    try:
        with GatewayThread(distributed_settings(repository, redis_url, prefix)) as gateway:
            tiny_vae(repository, "hot")  # published while both are running
            gateway.wait_for_model("hot", timeout_s=60)
            first = generate(gateway, "hot:1")
            assert first.shape == (2, 1, 28, 28) and 0.0 <= first.min() and first.max() <= 1.0

            tiny_vae(repository, "hot")  # version 2: same queue, resolved per message
            assert np.array_equal(generate(gateway, "hot:1"), first), "a pinned version keeps serving"
            # The bare name moves to the new version once the gateway's view of the repository
            # is renewed: within manifest_ttl_s (2 s) of its last scan, as documented.
            deadline = time.monotonic() + gateway.settings.gateway.manifest_ttl_s + 5
            while True:
                latest = gateway.inference.GenerateImages(
                    inference_pb2.GenerateImagesRequest(model="hot", count=1, seed=7), timeout=30)
                if latest.model == "hot:2" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert latest.model == "hot:2"

            listed = gateway.models.ListModels(models_pb2.ListModelsRequest(), timeout=10).models
            assert [(m.name, m.version, m.ready, m.latest) for m in listed] == [
                ("hot", "1", True, False), ("hot", "2", True, True)]
        assert "now consuming" in worker.output()
    finally:
        worker.stop()
