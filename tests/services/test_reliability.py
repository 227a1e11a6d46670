"""A crash loses no accepted work: a worker killed mid-batch, Redis keeps the message."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis

from genserve.tensors import from_proto
from genserve.v1 import inference_pb2
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

pytestmark = pytest.mark.integration

FAST_RESTORE = {"GENSERVE_WORKER__VISIBILITY_TIMEOUT_S": "2", "GENSERVE_WORKER__RESTORE_INTERVAL_S": "1"}


def _taken_by_a_worker(client: redis.Redis, queue: str) -> bool:
    """True once a worker has reserved a message of `queue` (kombu's unacked hash holds it)."""
    return any(queue.encode() in value for value in client.hvals("unacked"))


def test_worker_killed_mid_batch_loses_no_request(repo: Path, redis_url: str):
    """SIGKILL while a batch runs: the unacked message is redelivered to a new worker and answered."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    with GatewayThread(distributed_settings(repo, redis_url, prefix)) as gw:
        first = WorkerProcess(repo, redis_url, prefix, env=FAST_RESTORE)
        # 4096 images as PNGs keep a worker busy for a while: long enough to kill it mid-batch.
        request = inference_pb2.GenerateImagesRequest(model="vae", count=4096, seed=3,
                                                      encoding=inference_pb2.IMAGE_ENCODING_TENSOR_AND_PNG)
        pending = gw.inference.GenerateImages.future(request, timeout=90)
        deadline = time.monotonic() + 60
        while not _taken_by_a_worker(client, f"{prefix}.vae"):
            assert time.monotonic() < deadline, "no worker reserved the message"
            time.sleep(0.01)
        first.kill()
        assert not pending.done()
        second = WorkerProcess(repo, redis_url, prefix, env=FAST_RESTORE)
        try:
            response = pending.result()
        finally:
            second.stop()
            first.stop()
    images = from_proto(response.images)
    assert images.shape == (4096, 1, 28, 28) and len(response.png) == 4096
    assert response.seed == 3
