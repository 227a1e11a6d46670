"""A job survives Redis (with its append-only file) and the gateway restarting mid-job."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis

from genserve.jobs import layout
from genserve.v1 import jobs_pb2
from tests.conftest import WorkerProcess
from tests.jobs.conftest import JobsGateway, jobs_settings

pytestmark = pytest.mark.integration

FAST_RESTORE = {"GENSERVE_WORKER__VISIBILITY_TIMEOUT_S": "2", "GENSERVE_WORKER__RESTORE_INTERVAL_S": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis(port: int, folder: Path) -> subprocess.Popen:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def test_job_completes_across_a_redis_kill_and_a_gateway_restart(repo: Path, tmp_path: Path):
    """SIGKILL Redis (AOF, fsync always) and replace the gateway mid-job: it finishes, every index once."""
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode:
        pytest.skip("no redis-server binary")
    port, data = _free_port(), tmp_path / "redis"
    data.mkdir()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis(port, data)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings = jobs_settings(repo, url, prefix, tmp_path / "jobs")
    worker = WorkerProcess(repo, url, prefix, env=FAST_RESTORE)
    try:
        with JobsGateway(settings) as gw:
            gw.wait_for_model("vae")
            job = gw.submit(model="vae", count=20_000, seed=21, chunk_size=100)
            end = time.monotonic() + 30
            while gw.jobs.GetJob(jobs_pb2.GetJobRequest(id=job.id), timeout=10).chunks_done < 5:
                assert time.monotonic() < end
                time.sleep(0.02)
        server.kill()
        server.wait(timeout=10)
        time.sleep(0.5)
        server = _redis(port, data)
        with JobsGateway(settings) as gw:  # a new gateway process would see the same: state is in Redis
            during = gw.jobs.GetJob(jobs_pb2.GetJobRequest(id=job.id), timeout=10)
            assert during.chunks_done < 200 and during.total == 20_000
            final = gw.wait(job.id, timeout_s=120)
        assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED and final.done == 20_000
        folder = Path(final.result_dir)
        manifest = layout.read_manifest(folder)
        assert layout.verify(folder, manifest) == []
        assert sorted(f["start"] for f in manifest["files"]) == list(range(0, 20_000, 100))
        assert layout.load_images(folder, manifest).shape[0] == 20_000
    finally:
        worker.stop()
        server.kill()
        server.wait(timeout=10)
