"""Job records (genserve.jobs.store) -> jobs_pb2.Job."""

from __future__ import annotations

import base64
import time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from genserve.jobs.store import SUCCEEDED, SUCCEEDED_WITH_ERRORS
from genserve.v1 import jobs_pb2

STATES = {name: jobs_pb2.JobState.Value(f"JOB_STATE_{name}") for name in
          ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "SUCCEEDED_WITH_ERRORS")}
NAMES = {value: name for name, value in STATES.items()}
MAX_ARTIFACTS = 10_000  # files listed in Job.artifacts; manifest.json lists them all


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def to_proto(record: dict[str, Any], chunks_done: int, files: list[str] | None = None) -> jobs_pb2.Job:
    done, total = record["done"], record["total"]
    rate = eta = 0.0
    if record.get("started"):
        end = record["finished"] or time.time()
        elapsed = max(end - record["started"], 1e-3)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 and not record["finished"] else 0.0
    job = jobs_pb2.Job(
        id=record["id"], state=STATES[record["state"]], done=done, total=total, failed=record["failed"],
        created_at=_stamp(record["created"]), updated_at=_stamp(record["updated"]), error=record.get("error", ""),
        items_per_second=rate, eta_seconds=eta, chunks_done=chunks_done, chunks_total=record["chunks"],
        result_dir=record["dir"], model=record["model"],
    )
    if record.get("request"):
        job.request.ParseFromString(base64.b64decode(record["request"]))
    if record["state"] in (SUCCEEDED, SUCCEEDED_WITH_ERRORS) and files is not None:
        job.artifacts.extend(["manifest.json", *files[:MAX_ARTIFACTS]])
    return job
