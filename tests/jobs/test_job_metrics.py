"""The gateway's job metrics scraped from its /metrics endpoint after a small job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from genserve.settings import GatewaySettings, JobSettings, Settings
from genserve.v1 import jobs_pb2
from tests.conftest import WorkerProcess
from tests.jobs.conftest import JobsGateway
from tests.services.test_metrics import delta, scrape, value

pytestmark = pytest.mark.integration


def test_job_metrics_count_items_chunks_and_jobs_by_state(repo: Path, redis_url: str, queue_prefix: str,
                                                          worker: WorkerProcess, tmp_path: Path):
    """300 samples in chunks of 100: items +300 (generate_images), chunks done +3, and the job
    counted under SUCCEEDED by genserve_jobs after the next upkeep pass."""
    settings = Settings(model_repository=repo, broker_url=redis_url, queue_prefix=queue_prefix,
                        gateway=GatewaySettings(port=0, metrics_port=0), jobs=JobSettings(root=tmp_path))
    with JobsGateway(settings) as gw:
        gw.wait_for_model("vae")
        port = gw.gateway.metrics_port
        before = scrape(port)
        final = gw.wait(gw.submit(model="vae", count=300, seed=1, chunk_size=100).id)
        assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED
        after = scrape(port)
        assert delta(after, before, "genserve_job_items_total", model="vae", kind="generate_images") == 300
        assert delta(after, before, "genserve_job_chunks_total", model="vae", outcome="done") == 3
        assert delta(after, before, "genserve_job_chunks_total", model="vae", outcome="failed") == 0
        succeeded = value(before, "genserve_jobs", state="SUCCEEDED")
        end = time.monotonic() + 20
        while value(after, "genserve_jobs", state="SUCCEEDED") < succeeded + 1 and time.monotonic() < end:
            time.sleep(0.5)
            after = scrape(port)
        assert value(after, "genserve_jobs", state="SUCCEEDED") >= succeeded + 1
        assert ("genserve_jobs", frozenset({("state", "QUEUED")})) in after
