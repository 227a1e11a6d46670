"""Batch-job calls of the Python client (mixed into genserve.client.Client) and the
`genserve job ...` progress line.

    job = client.submit_job(generate_images={"model": "vae", "count": 1_000_000, "seed": 42})
    for update in client.watch_job(job.id): print(progress_line(update))
    client.fetch_job(job.id, Path("digits-42"))   # downloads every file, checks every sha256
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from genserve.v1 import jobs_pb2, jobs_pb2_grpc

UPLOAD_PIECE = 1 << 20  # bytes per UploadInputChunk


class ChecksumError(Exception):
    """A fetched file does not match the sha256 or size in the job's manifest."""


def state_name(state: int) -> str:
    return jobs_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(job: jobs_pb2.Job) -> str:
    """One line: state, items done of total, failed, rate and ETA (no tqdm in the base install)."""
    share = job.done / job.total if job.total else 0.0
    bar = "#" * int(share * 20)
    line = (f"{job.id} {state_name(job.state):<9} [{bar:<20}] {job.done:,}/{job.total:,} "
            f"({share:6.1%}) {job.items_per_second:,.0f} items/s")
    if job.eta_seconds:
        line += f" ETA {_duration(job.eta_seconds)}"
    if job.failed:
        line += f" failed {job.failed:,}"
    return line


class JobCalls:
    """JobService calls; needs `self.channel` and `self.timeout_s`."""

    channel: Any
    timeout_s: float

    @property
    def job_stub(self) -> jobs_pb2_grpc.JobServiceStub:
        return jobs_pb2_grpc.JobServiceStub(self.channel)

    def submit_job(self, generate_images: dict[str, Any] | None = None, input_file: dict[str, Any] | None = None,
                   client_token: str = "") -> jobs_pb2.Job:
        """SubmitJob with the fields of GenerateImagesJob or InputFileJob as a dict."""
        request = jobs_pb2.SubmitJobRequest(client_token=client_token)
        if generate_images is not None:
            request.generate_images.CopyFrom(jobs_pb2.GenerateImagesJob(**generate_images))
        if input_file is not None:
            request.input_file.CopyFrom(jobs_pb2.InputFileJob(**input_file))
        return self.job_stub.SubmitJob(request, timeout=self.timeout_s)

    def get_job(self, job_id: str) -> jobs_pb2.Job:
        return self.job_stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=self.timeout_s)

    def watch_job(self, job_id: str) -> Iterator[jobs_pb2.Job]:
        """The job at every change of progress or state, until it finishes (no deadline)."""
        yield from self.job_stub.WatchJob(jobs_pb2.WatchJobRequest(id=job_id))

    def cancel_job(self, job_id: str) -> jobs_pb2.Job:
        return self.job_stub.CancelJob(jobs_pb2.CancelJobRequest(id=job_id), timeout=self.timeout_s)

    def list_jobs(self, state: str = "", page_size: int = 50) -> Iterator[jobs_pb2.Job]:
        """Every job (newest first), following the pages; `state` e.g. "RUNNING"."""
        token = ""
        value = jobs_pb2.JobState.Value(f"JOB_STATE_{state.upper()}") if state else 0
        while True:
            page = self.job_stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=page_size, page_token=token, state=value),
                                          timeout=self.timeout_s)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def upload_input(self, path: Path) -> jobs_pb2.UploadInputResponse:
        def pieces() -> Iterator[jobs_pb2.UploadInputChunk]:
            yield jobs_pb2.UploadInputChunk(filename=Path(path).name)
            with open(path, "rb") as f:
                while data := f.read(UPLOAD_PIECE):
                    yield jobs_pb2.UploadInputChunk(data=data)

        return self.job_stub.UploadInput(pieces(), timeout=self.timeout_s)

    def fetch_file(self, job_id: str, relative: str, out: Path) -> str:
        """Stream one file of a job to `out`; its sha256."""
        out.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        tmp = out.with_name(out.name + ".part")
        with open(tmp, "wb") as f:
            for piece in self.job_stub.FetchResult(jobs_pb2.FetchResultRequest(id=job_id, path=relative), timeout=self.timeout_s):
                digest.update(piece.data)
                f.write(piece.data)
        tmp.replace(out)
        return digest.hexdigest()

    def fetch_job(self, job_id: str, out: Path) -> dict[str, Any]:
        """Download a finished job's manifest and every file it lists, checking each sha256
        and size; raises ChecksumError on the first mismatch. Returns the manifest."""
        self.fetch_file(job_id, "manifest.json", out / "manifest.json")
        manifest = json.loads((out / "manifest.json").read_text())
        for entry in manifest["files"]:
            target = out / entry["path"]
            got = self.fetch_file(job_id, entry["path"], target)
            if got != entry["sha256"] or target.stat().st_size != entry["bytes"]:
                raise ChecksumError(f"{entry['path']}: sha256 {got[:12]}..., manifest {entry['sha256'][:12]}...")
        return manifest
