"""`genserve job ...` against a running gateway: submit with a live line, fetch with checksums."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genserve.client import Client
from genserve.jobs import layout
from tests.jobs.conftest import JobsGateway

pytestmark = pytest.mark.integration


def _genserve(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genserve", *argv], capture_output=True, text=True, timeout=60)


def test_cli_submits_watches_and_fetches_a_job_whose_checksums_verify(jobs_gateway: JobsGateway, tmp_path: Path):
    """submit --watch prints a progress line and exits 0; fetch downloads files that verify and equal the volume's."""
    address = ("--address", jobs_gateway.address)
    submitted = _genserve("job", "submit", "vae", "--count", "500", "--seed", "8", "--chunk-size", "128",
                          "--preview", "--watch", *address)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    assert "SUCCEEDED" in submitted.stderr and "500/500" in submitted.stderr and "items/s" in submitted.stderr
    fetched = _genserve("job", "fetch", job_id, "-o", str(tmp_path / "out"), *address)
    assert fetched.returncode == 0, fetched.stderr
    assert _genserve("job", "verify", str(tmp_path / "out")).returncode == 0
    manifest = layout.read_manifest(tmp_path / "out")
    assert len(manifest["files"]) == 5  # 4 shards + preview.png
    with Client(jobs_gateway.address) as client:
        volume = Path(client.get_job(job_id).result_dir)
        assert job_id in [j.id for j in client.list_jobs("SUCCEEDED")]
    assert np.array_equal(layout.load_images(tmp_path / "out", manifest), layout.load_images(volume, manifest))
    (tmp_path / "out" / manifest["files"][0]["path"]).write_bytes(b"tampered")
    assert _genserve("job", "verify", str(tmp_path / "out")).returncode == 1
    listed = _genserve("job", "list", "--state", "succeeded", *address)
    assert job_id in listed.stdout
