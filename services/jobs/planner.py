"""SubmitJob's checks and plan: a validated job spec -> its record and its chunk messages.

Everything a job can be refused for is checked here, before anything is stored or enqueued:
arguments (INVALID_ARGUMENT), the model (NOT_FOUND), the item limit and the number of active
jobs, and the space it needs on the jobs volume (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genserve.services.jobs import prompts

from genserve.errors import InvalidArgumentError, QueueFullError
from genserve.jobs import inputs, layout
from genserve.jobs.store import QUEUED, new_id
from genserve.protocol import ChunkPayload, bulk_queue_name
from genserve.repository import Manifest
from genserve.settings import JobSettings, Settings
from genserve.v1 import jobs_pb2

FORMATS = {jobs_pb2.OUTPUT_FORMAT_UNSPECIFIED: "npy", jobs_pb2.OUTPUT_FORMAT_NPY: "npy", jobs_pb2.OUTPUT_FORMAT_NPZ: "npz"}
INPUT_FORMATS = {jobs_pb2.INPUT_FORMAT_UNSPECIFIED: "", jobs_pb2.INPUT_FORMAT_JSONL: "jsonl",
                 jobs_pb2.INPUT_FORMAT_NPY: "npy", jobs_pb2.INPUT_FORMAT_NPZ: "npz", jobs_pb2.INPUT_FORMAT_PNG_DIR: "png_dir"}
JSONL_BYTES_PER_ITEM = 256  # estimate of one output line (id + top labels)
TEXT_BYTES_PER_TOKEN = 8  # estimate of a generated token in an output line
OPS = {"text_classifier": "classify", "image_classifier": "classify", "image_to_image": "denoise",
       "autoregressive": "generate_text"}
NPY_HEADER = 128


@dataclass
class Plan:
    record: dict[str, Any]  # what the store keeps
    chunks: list[ChunkPayload]
    queue: str


class ResourceExhaustedError(QueueFullError):
    """The job does not fit: items, active jobs or space on the jobs volume."""


def _chunk_size(asked: int, jobs: JobSettings, default: int | None = None) -> int:
    default = default or jobs.chunk_size
    if asked == 0:
        return default
    if not 1 <= asked <= jobs.max_chunk_size:
        raise InvalidArgumentError(f"chunk_size must be 0 (default {default}) or 1..{jobs.max_chunk_size}, got {asked}")
    return asked


def _items(count: int, jobs: JobSettings) -> int:
    if count < 1:
        raise InvalidArgumentError(f"count must be 1..{jobs.max_items}, got {count}")
    if count > jobs.max_items:
        raise ResourceExhaustedError(f"a job may have at most {jobs.max_items} items (jobs.max_items), got {count}")
    return count


def check_space(root: Path, needed: int, jobs: JobSettings) -> None:
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    margin = jobs.free_space_margin_mb << 20
    if needed + margin > free:
        raise ResourceExhaustedError(
            f"the job needs about {needed / 1e6:.1f} MB and the jobs volume {root} has {free / 1e6:.1f} MB free "
            f"(keeping {jobs.free_space_margin_mb} MB spare); use a smaller count or free space")


def _record(kind: str, manifest: Manifest, spec: dict[str, Any], total: int, chunk: int, settings: Settings, token: str) -> dict[str, Any]:
    job_id = new_id()
    now = time.time()
    return {
        "id": job_id, "kind": kind, "state": QUEUED, "spec": json.dumps(spec), "model": manifest.ref,
        "model_sha256": manifest.files["model"].sha256, "total": total, "chunks": -(-total // chunk),
        "chunk_size": chunk, "done": 0, "failed": 0, "max_attempts": settings.jobs.max_attempts,
        "max_runs": max(settings.jobs.max_runs, settings.jobs.max_attempts),
        "dir": str((settings.jobs.root / job_id).resolve()), "created": now, "updated": now,
        "started": 0.0, "finished": 0.0, "error": "", "token": token, "enqueued": 0,
    }


def _chunks(job_id: str, total: int, chunk: int, offsets: list[int] | None = None) -> list[ChunkPayload]:
    return [ChunkPayload(job=job_id, chunk=k, start=start, count=min(chunk, total - start),
                         offset=offsets[k] if offsets else 0)
            for k, start in enumerate(range(0, total, chunk))]


def generator(job: jobs_pb2.GenerateImagesJob, manifest: Manifest, settings: Settings, token: str) -> Plan:
    if manifest.loop != "latent_sampler":
        raise InvalidArgumentError(f"model {manifest.ref} is a {manifest.loop}; generator jobs need a latent_sampler")
    jobs = settings.jobs
    count, chunk = _items(job.count, jobs), _chunk_size(job.chunk_size, jobs, jobs.generator_chunk_size)
    label = job.label if job.HasField("label") else None
    if manifest.conditional and (label is None or not 0 <= label < len(manifest.labels)):
        raise InvalidArgumentError(f"model {manifest.ref} is class-conditional: label must be 0..{len(manifest.labels) - 1}")
    if not manifest.conditional and label is not None:
        raise InvalidArgumentError(f"model {manifest.ref} is not class-conditional; omit label")
    if job.format not in FORMATS:
        raise InvalidArgumentError(f"format must be one of {sorted(FORMATS)}, got {job.format}")
    image = manifest.image
    per_item = 4 * image.channels * image.height * image.width + (8 if FORMATS[job.format] == "npz" else 0)
    check_space(settings.jobs.root, count * per_item + NPY_HEADER * (count // chunk + 1), jobs)
    spec = {"kind": "generate_images", "model": manifest.ref, "count": count,
            "seed": job.seed if job.HasField("seed") else secrets.randbits(63), "label": label,
            "chunk_size": chunk, "format": FORMATS[job.format], "preview": job.preview,
            "batch": manifest.serving.max_batch_size}  # samples per ONNX call of a chunk
    record = _record("generate_images", manifest, spec, count, chunk, settings, token)
    return Plan(record, _chunks(record["id"], count, chunk), bulk_queue_name(settings.queue_prefix, manifest.name))


def resolve_input(root: Path, job: jobs_pb2.InputFileJob) -> Path:
    if bool(job.input_path) == bool(job.upload_id):
        raise InvalidArgumentError("give exactly one of input_path and upload_id")
    given = job.input_path or job.upload_id
    relative = Path(job.input_path) if job.input_path else Path("uploads") / job.upload_id
    if relative.is_absolute() or ".." in relative.parts or "\x00" in given:
        raise InvalidArgumentError(f"input_path must be relative to the jobs volume, without '..', got {given!r}")
    try:
        path = (root / relative).resolve()
        if not path.is_relative_to(root.resolve()):  # a symlink out of the volume
            raise InvalidArgumentError(f"input {relative} leads out of the jobs volume (a symbolic link?)")
        if not path.exists():
            raise InvalidArgumentError(f"input {relative} does not exist on the jobs volume")
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
        raise InvalidArgumentError(f"cannot open input {given[:200]!r}: {exc}") from exc
    return path


def input_file(job: jobs_pb2.InputFileJob, manifest: Manifest, settings: Settings, token: str,
               tokenizer: Callable[[Manifest], prompts.Tokenizer] | None = None) -> Plan:
    """`tokenizer(manifest)`: the text generator's tokenizer (text-generation jobs only)."""
    jobs = settings.jobs
    path = resolve_input(jobs.root, job)
    op = OPS.get(manifest.loop)
    if op is None:
        raise InvalidArgumentError(f"model {manifest.ref} is a {manifest.loop}; input-file jobs take a text or "
                                   "image classifier, a denoiser or a text generator")
    chunk = _chunk_size(job.chunk_size, jobs)
    try:
        fmt = inputs.format_of(path, INPUT_FORMATS.get(job.input_format, ""))
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from exc
    if (fmt == "jsonl") != (manifest.loop in ("text_classifier", "autoregressive")):
        raise InvalidArgumentError(f"model {manifest.ref} ({manifest.loop}) cannot read {fmt} input")
    offsets = None
    try:
        if fmt == "jsonl":
            total, offsets = inputs.plan_jsonl(path, chunk)
        else:
            total = inputs.count_items(path, fmt)
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidArgumentError(f"cannot read {path.name}: {exc}") from exc
    total = _items(total, jobs)
    labels = list(manifest.labels)
    top_k = job.top_k or 1
    if op == "classify" and not 1 <= top_k <= len(labels):
        raise InvalidArgumentError(f"top_k must be 1..{len(labels)}, got {top_k}")
    image = manifest.image
    per_item = (4 * image.channels * image.height * image.width if op == "denoise"
                else JSONL_BYTES_PER_ITEM + TEXT_BYTES_PER_TOKEN * int(manifest.config.get("block_size", 0))
                if op == "generate_text" else JSONL_BYTES_PER_ITEM * top_k)
    check_space(jobs.root, total * per_item, jobs)
    spec = {"kind": "input_file", "op": op, "model": manifest.ref, "input": str(path), "input_format": fmt,
            "top_k": top_k, "chunk_size": chunk, "labels": labels, "channels": image.channels if image else 0,
            "size": [image.height, image.width] if image else []}
    if op == "generate_text":
        spec.update(source=str(path), seed=job.seed if job.HasField("seed") else secrets.randbits(63),
                    max_new_tokens=job.max_new_tokens or prompts.DEFAULT_MAX_NEW_TOKENS)
    record = _record("input_file", manifest, spec, total, chunk, settings, token)
    if op == "generate_text":
        offsets = _prepare_prompts(record, spec, manifest, settings, tokenizer, chunk)
    return Plan(record, _chunks(record["id"], total, chunk, offsets), bulk_queue_name(settings.queue_prefix, manifest.name))


def _prepare_prompts(record: dict[str, Any], spec: dict[str, Any], manifest: Manifest, settings: Settings,
                     tokenizer: Callable[[Manifest], prompts.Tokenizer] | None, chunk: int) -> list[int]:
    """Check every line into the job's prompts.jsonl, which its chunks then read; its offsets."""
    if tokenizer is None:
        raise InvalidArgumentError(f"model {manifest.ref}: text-generation jobs need the gateway's tokenizer")
    target = Path(record["dir"]) / layout.PROMPTS
    refused = prompts.prepare(Path(spec["source"]), target, manifest, settings.limits, tokenizer(manifest),
                              spec["seed"], spec["max_new_tokens"])
    spec["input"], spec["refused"] = str(target), refused
    record["spec"] = json.dumps(spec)
    return inputs.plan_jsonl(target, chunk)[1]
