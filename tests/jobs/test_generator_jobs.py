"""Generator jobs end to end: real Redis, a real `genserve worker`, the gateway on a thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genserve.jobs import layout
from genserve.tensors import from_proto
from genserve.v1 import inference_pb2, jobs_pb2
from tests.jobs.conftest import JobsGateway

pytestmark = pytest.mark.integration


def _images(job: jobs_pb2.Job) -> tuple[np.ndarray, dict]:
    folder = Path(job.result_dir)
    manifest = layout.read_manifest(folder)
    assert layout.verify(folder, manifest) == []
    return layout.load_images(folder, manifest), manifest


def test_generator_job_writes_every_index_once_with_verified_checksums(jobs_gateway: JobsGateway):
    """1,000 samples in chunks of 96: SUCCEEDED, shards cover 0..999 exactly once, checksums hold."""
    job = jobs_gateway.submit(model="vae", count=1000, seed=42, chunk_size=96)
    assert job.state in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING) and job.total == 1000
    final = jobs_gateway.wait(job.id)
    assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED and final.done == 1000 and final.chunks_done == 11
    images, manifest = _images(final)
    ranges = sorted((f["start"], f["count"]) for f in manifest["files"])
    assert [s for s, _ in ranges] == list(range(0, 1000, 96)) and sum(c for _, c in ranges) == 1000
    assert images.shape == (1000, 1, 28, 28)
    assert manifest["model"]["ref"] == "vae:1" and len(manifest["model"]["sha256"]) == 64
    assert manifest["seeds"]["seed"] == 42 and manifest["execution_providers"] == ["CPUExecutionProvider"]
    assert "manifest.json" in final.artifacts


def test_samples_regenerated_alone_equal_the_job_bytes(jobs_gateway: JobsGateway):
    """GenerateImages(seed, first_index=i, count=k) returns exactly samples i..i+k-1 of the job."""
    final = jobs_gateway.wait(jobs_gateway.submit(model="vae", count=700, seed=7, chunk_size=128).id)
    images, _ = _images(final)
    for first, count in ((0, 1), (255, 3), (511, 2), (699, 1), (130, 40)):
        request = inference_pb2.GenerateImagesRequest(model="vae", seed=7, first_index=first, count=count)
        alone = from_proto(jobs_gateway.inference.GenerateImages(request, timeout=30).images)
        assert alone.tobytes() == images[first : first + count].tobytes()


def test_chunk_size_does_not_change_the_bytes(jobs_gateway: JobsGateway):
    """The same seed in chunks of 50 and of 333 (npz) gives identical images."""
    a = jobs_gateway.submit(model="vae", count=600, seed=5, chunk_size=50)
    b = jobs_gateway.submit(model="vae", count=600, seed=5, chunk_size=333, format=jobs_pb2.OUTPUT_FORMAT_NPZ)
    first, _ = _images(jobs_gateway.wait(a.id))
    second, manifest = _images(jobs_gateway.wait(b.id))
    assert first.tobytes() == second.tobytes()
    shard = np.load(Path(b.result_dir) / manifest["files"][1]["path"])
    assert shard["index"].tolist() == list(range(333, 600))


def test_same_client_token_returns_the_same_job(jobs_gateway: JobsGateway):
    """Resubmitting with one idempotency key answers the first job; a new key makes a new one."""
    first = jobs_gateway.submit(model="vae", count=10, seed=1, client_token="tok-a")
    again = jobs_gateway.submit(model="vae", count=10, seed=1, client_token="tok-a")
    other = jobs_gateway.submit(model="vae", count=10, seed=1, client_token="tok-b")
    assert again.id == first.id and other.id != first.id
    assert jobs_gateway.wait(first.id).state == jobs_pb2.JOB_STATE_SUCCEEDED
