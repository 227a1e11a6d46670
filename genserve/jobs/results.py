"""Finishing a job: when every chunk is done, merge error parts, write the manifest, and
move the record to its final state. Idempotent: workers (after the last chunk) and the gateway
(when it sees a job whose chunks are all done, e.g. after that worker died) may both call it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from genserve import seeds
from genserve.jobs import layout
from genserve.jobs.store import ACTIVE, FAILED, SUCCEEDED, SUCCEEDED_WITH_ERRORS, JobStore


FINALIZE_LOCK_S = 60.0  # if the finisher dies, the gateway's upkeep pass retries after this


def spec_of(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(record["spec"])


def build_manifest(record: dict[str, Any], shards: dict[int, dict[str, Any]], errors: dict[str, Any] | None) -> dict[str, Any]:
    spec = spec_of(record)
    files = [entry for chunk in sorted(shards) for entry in shards[chunk]["files"]]
    if errors is not None:
        files.append(errors)
    providers = sorted({s.get("provider", "") for s in shards.values()} - {""})
    manifest = {
        "job": record["id"], "kind": spec["kind"], "parameters": spec,
        "model": {"ref": record["model"], "name": record["model"].split(":")[0],
                  "version": record["model"].split(":")[1], "sha256": record.get("model_sha256", "")},
        "execution_providers": providers, "total": record["total"], "failed": record["failed"],
        "chunks": record["chunks"], "chunk_size": record["chunk_size"],
        "created": record["created"], "finished": time.time(), "files": files,
    }
    if spec["kind"] == "generate_images":
        manifest["seeds"] = {"scheme": seeds.SCHEME, "seed": spec["seed"],
                             "rule": "sample i = row i % 256 of Philox(key=seed, counter=[0, i // 256, 0, 0])"
                                     ".standard_normal((256, latent_dim), float32), decoded by the model"}
    return manifest


def merge_errors(folder: Path, shards: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """errors.jsonl from the chunks' error parts, in input order; its manifest entry."""
    parts = [shards[c]["errors"] for c in sorted(shards) if shards[c].get("errors")]
    if not any("errors" in s for s in shards.values()):
        return None
    data = b"".join((folder / p).read_bytes() for p in parts if (folder / p).exists())
    return layout.write_file(folder, layout.ERRORS, data, 0, data.count(b"\n"))


def finalize(store: JobStore, job_id: str) -> bool:
    """Finish the job if all its chunks are done and it is still active; whether it did."""
    record = store.get(job_id)
    if record is None or record["state"] not in ACTIVE:
        return False
    if store.chunks_done(job_id) < record["chunks"]:
        return False
    if not store.lock(job_id, FINALIZE_LOCK_S):  # a worker and a gateway may both get here
        return False
    record = store.get(job_id) or record
    if record["state"] not in ACTIVE:
        return False
    folder = Path(record["dir"])
    shards = store.shards(job_id)
    errors = merge_errors(folder, shards) if record.get("kind") == "input_file" else None
    layout.write_manifest(folder, build_manifest(record, shards, errors))
    final = SUCCEEDED_WITH_ERRORS if record["failed"] else SUCCEEDED
    done = store.transition(job_id, ACTIVE, final, finished=time.time())
    for chunk in shards.values():  # the parts are in errors.jsonl now
        if chunk.get("errors"):
            (folder / chunk["errors"]).unlink(missing_ok=True)
    return done


def fail(store: JobStore, job_id: str, error: str) -> bool:
    return store.transition(job_id, ACTIVE, FAILED, error=error, finished=time.time())
