"""Fixtures for batch jobs: a gateway with a private jobs volume, sharing the session's worker."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from genserve.settings import JobSettings, Settings
from genserve.v1 import jobs_pb2, jobs_pb2_grpc
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread


class JobsGateway(GatewayThread):
    """A GatewayThread with a JobService stub."""

    def __enter__(self) -> JobsGateway:
        super().__enter__()
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        return self

    def submit(self, **spec: object) -> jobs_pb2.Job:
        token = str(spec.pop("client_token", ""))
        job = jobs_pb2.GenerateImagesJob(**spec)
        return self.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(generate_images=job, client_token=token), timeout=30)

    def wait(self, job_id: str, timeout_s: float = 60) -> jobs_pb2.Job:
        """The job's last state from WatchJob (which ends when the job does)."""
        last = None
        for last in self.jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job_id), timeout=timeout_s):
            pass
        return last


def jobs_settings(repo: Path, redis_url: str, prefix: str, root: Path, **jobs: object) -> Settings:
    return distributed_settings(repo, redis_url, prefix, jobs=JobSettings(root=root, **jobs))


@pytest.fixture(scope="session")
def jobs_gateway(repo: Path, redis_url: str, queue_prefix: str, worker: WorkerProcess,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsGateway]:
    """Gateway + the session's `genserve worker` through Redis, jobs under a temporary root."""
    root = tmp_path_factory.mktemp("jobs")
    with JobsGateway(jobs_settings(repo, redis_url, queue_prefix, root)) as running:
        running.wait_for_model("vae")
        yield running
