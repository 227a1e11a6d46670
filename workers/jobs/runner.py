"""Runs one chunk of a batch job on the existing serving loops (`tasks.execute`).

A generator chunk is one generate_images request (seed, first_index, count), so the images
are exactly what GenerateImages returns for the same range; an input-file chunk is one request
per input item (a bad item fails alone). The outputs become the chunk's shard, written
atomically, and the chunk is counted once (SADD in the store). The Celery task and the
embedded mode both call `ChunkRunner.run`:

    skipped  the job is cancelled, finished or gone, or the chunk was done already: ack, no work
             (a generator chunk also looks between its parts, every CANCEL_CHECK_S, and stops
             there, its partial shard deleted)
    done     the shard is written and counted (and the job finished, if it was the last)
    retry    the chunk failed and has attempts left: the caller enqueues it again
    failed   out of attempts: the generator job is FAILED; an input-file chunk's items go
             to errors.jsonl and the job goes on
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genserve.jobs import inputs, layout, results
from genserve.jobs.store import ACTIVE, QUEUED, RUNNING, JobStore
from genserve.tensors import from_wire, grid, png_decode, png_encode, to_wire

log = logging.getLogger(__name__)

PREVIEW_IMAGES = 64
SUB_BATCH = 512  # samples per generate_images call of a chunk when the job has no model batch size
CANCEL_CHECK_S = 0.5  # how often a running generator chunk looks whether its job was cancelled
Execute = Callable[[dict[str, Any]], dict[str, Any]]  # tasks.execute bound to the worker's model cache


class ChunkError(Exception):
    """A whole chunk failed (model missing, every item refused by the loop)."""


class ChunkStopped(Exception):
    """The job was cancelled (or finished, or deleted) while the chunk ran."""


class ChunkRunner:
    def __init__(self, store: JobStore, execute: Execute, fsync: bool = False) -> None:
        self.store = store
        self.execute = execute
        self.fsync = fsync  # fsync shards before renaming them (jobs.fsync)
        self._pause: Callable[[], None] = lambda: None

    def run(self, payload: dict[str, Any], pause: Callable[[], None] | None = None) -> str:
        """`pause()` is called between the chunk's ONNX calls (the bulk consumer yields to
        online tasks there)."""
        self._pause = pause or (lambda: None)
        job_id, chunk = payload["job"], int(payload["chunk"])
        record = self.store.get(job_id)
        if record is None or record["state"] not in ACTIVE or self.store.is_done(job_id, chunk):
            return "skipped"
        attempt = self.store.attempt(job_id, chunk)
        # A run that raised gives up by itself at max_attempts (below); reaching this bound
        # means earlier runs were cut short: their workers died.
        max_runs = int(record.get("max_runs") or record["max_attempts"])
        if attempt > max_runs:
            return self._give_up(record, payload, record.get("last_error") or "the worker running it died", max_runs)
        self.store.transition(job_id, (QUEUED,), RUNNING, started=time.time())
        try:
            shard = self._run(record, payload)
        except ChunkStopped:
            log.info("job %s chunk %d stopped: the job is no longer active", job_id, chunk)
            return "skipped"
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            log.warning("job %s chunk %d attempt %d failed: %s", job_id, chunk, attempt, message)
            self.store.update(job_id, last_error=message)
            if attempt < record["max_attempts"]:
                self.store.count(f"chunks|{_model(record)}|retried")
                return "retry"
            return self._give_up(record, payload, message, attempt)
        self._complete(record, payload, shard)
        return "done"

    def _complete(self, record: dict[str, Any], payload: dict[str, Any], shard: dict[str, Any],
                  outcome: str = "done") -> None:
        spec = results.spec_of(record)
        done = self.store.complete_chunk(record["id"], int(payload["chunk"]), shard, int(payload["count"]),
                                         int(shard.get("failed", 0)), spec.get("op", spec["kind"]), outcome)
        if done >= record["chunks"]:
            results.finalize(self.store, record["id"])

    def _give_up(self, record: dict[str, Any], payload: dict[str, Any], message: str, runs: int) -> str:
        chunk, start, count = int(payload["chunk"]), int(payload["start"]), int(payload["count"])
        error = f"chunk {chunk} (items {start}..{start + count - 1}) failed {runs} times: {message}"
        if record["kind"] == "generate_images":
            self.store.count(f"chunks|{_model(record)}|failed")
            results.fail(self.store, record["id"], error)
            return "failed"
        folder = Path(record["dir"])  # input-file job: its items become error lines, the job goes on
        lines = [{"line": start + i, "error": error} for i in range(count)]
        part = layout.write_file(folder, layout.shard_name("errors", chunk, ".jsonl"), _jsonl(lines), start, count)
        self._complete(record, payload, {"files": [], "errors": part["path"], "failed": count}, "failed")
        return "failed"

    def _run(self, record: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        spec = results.spec_of(record)
        if spec["kind"] == "generate_images":
            return self._generate(record, spec, payload)
        if spec["op"] == "generate_text":
            return self._generations(record, spec, payload)
        if spec["input_format"] == "jsonl":
            return self._texts(record, spec, payload)
        return self._images(record, spec, payload)

    def _call(self, record: dict[str, Any], op: str, requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        result = self.execute({"model": record["model"], "op": op, "requests": requests})
        outcomes = result["results"]
        if outcomes and not any(o["ok"] for o in outcomes) and outcomes[0].get("code") in ("UNAVAILABLE", "INTERNAL", "NOT_FOUND"):
            raise ChunkError(outcomes[0]["message"])  # the model, not the items: retry elsewhere
        return outcomes, result.get("provider", "")

    def _generate(self, record: dict[str, Any], spec: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        """The chunk as generate_images requests of SUB_BATCH samples (the same bytes as one
        request: seeds are per sample), each part written while the next one runs."""
        chunk, start, count = int(payload["chunk"]), int(payload["start"]), int(payload["count"])
        folder = Path(record["dir"])
        writer, parts, provider, files = None, [], "", []
        step = max(int(spec.get("batch") or SUB_BATCH), PREVIEW_IMAGES)  # the model's batch: one ONNX call a part
        looked = time.monotonic()
        try:
            for first in range(start, start + count, step):
                self._pause()
                if time.monotonic() - looked > CANCEL_CHECK_S:
                    self._check_active(record["id"])
                    looked = time.monotonic()
                n = min(step, start + count - first)
                # "array": the loop hands back its output array in this process (no bytes copy)
                request = {"count": n, "seed": spec["seed"], "first_index": first, "label": spec.get("label"),
                           "latents": None, "tensor": True, "array": True, "png": False, "return_latents": False}
                outcomes, provider = self._call(record, "generate_images", [request])
                if not outcomes[0]["ok"]:
                    raise ChunkError(outcomes[0]["message"])
                images = outcomes[0]["array"] if "array" in outcomes[0] else from_wire(outcomes[0]["images"])
                if first == start and spec.get("preview") and chunk == 0:
                    sheet = png_encode(grid(images[:PREVIEW_IMAGES]))
                    files.append(layout.write_file(folder, layout.PREVIEW, sheet, 0, min(n, PREVIEW_IMAGES)))
                if spec["format"] == "npz":
                    parts.append(images)
                    continue
                if writer is None:
                    writer = layout.NpyShardWriter(folder, layout.shard_name("images", chunk, ".npy"),
                                                   (count, *images.shape[1:]), images.dtype, start, self.fsync)
                writer.append(images)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if spec["format"] == "npz":
            index = np.arange(start, start + count, dtype=np.uint64)
            data = layout.npz_bytes({"images": np.concatenate(parts), "index": index})
            shard = layout.write_file(folder, layout.shard_name("images", chunk, ".npz"), data, start, count, self.fsync)
        else:
            shard = writer.close()
        return {"files": [shard, *files], "provider": provider}

    def _check_active(self, job_id: str) -> None:
        current = self.store.get(job_id)
        if current is None or current["state"] not in ACTIVE:
            raise ChunkStopped(job_id)

    def _texts(self, record: dict[str, Any], spec: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        start, count = int(payload["start"]), int(payload["count"])
        good, errors = [], []
        for line, raw in inputs.read_jsonl(Path(spec["input"]), int(payload["offset"]), start, count):
            try:
                good.append((line, *inputs.parse_text_line(raw)))
            except ValueError as exc:
                errors.append({"line": line, "error": str(exc)})
        requests = [{"texts": [text], "top_k": spec["top_k"]} for _, _, text in good]
        outcomes, provider = self._call(record, "classify", requests) if requests else ([], "")
        ids = [(line, item_id) for line, item_id, _ in good]
        return self._write_outputs(record, payload, ids, outcomes, errors, provider)

    def _generations(self, record: dict[str, Any], spec: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        """The chunk's prompts (checked by the gateway into prompts.jsonl) as one generate_text
        message: the handler submits them all to the decode scheduler, so they share steps."""
        start, count = int(payload["start"]), int(payload["count"])
        tasks, kept, errors = [], [], []
        for _, raw in inputs.read_jsonl(Path(spec["input"]), int(payload["offset"]), start, count):
            row = json.loads(raw)
            if "error" in row:
                errors.append(row)
            else:
                tasks.append(row["task"])
                kept.append((row["line"], row["id"]))
        outcomes, provider = self._call(record, "generate_text", tasks) if tasks else ([], "")
        for outcome, task in zip(outcomes, tasks):
            outcome["seed"] = task["seed"]
        return self._write_outputs(record, payload, kept, outcomes, errors, provider)

    def _images(self, record: dict[str, Any], spec: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        start, count = int(payload["start"]), int(payload["count"])
        ids, items = inputs.read_images(Path(spec["input"]), spec["input_format"], start, count)
        requests, kept, errors = [], [], []
        for i, (item_id, item) in enumerate(zip(ids, items)):
            try:
                image = png_decode(item, spec["channels"]) if isinstance(item, bytes) else np.asarray(item, np.float32)
                image = image[None] if image.ndim == 2 else image
                _check_image(image, spec)
            except Exception as exc:
                errors.append({"id": item_id, "line": start + i, "error": str(exc)})
                continue
            requests.append({"images": to_wire(image[None]), "tensor": True, "png": False, "top_k": spec["top_k"]})
            kept.append((start + i, item_id))
        outcomes, provider = self._call(record, spec["op"], requests) if requests else ([], "")
        return self._write_outputs(record, payload, kept, outcomes, errors, provider)

    def _write_outputs(self, record: dict[str, Any], payload: dict[str, Any], ids: list[tuple[int, str]],
                       outcomes: list[dict[str, Any]], errors: list[dict[str, Any]], provider: str) -> dict[str, Any]:
        chunk, start, count = int(payload["chunk"]), int(payload["start"]), int(payload["count"])
        spec = results.spec_of(record)
        labels = spec.get("labels", [])
        lines, images, image_ids = [], [], []
        for (line, item_id), outcome in zip(ids, outcomes):
            if not outcome["ok"]:
                errors.append({"id": item_id, "line": line, "error": outcome["message"]})
            elif "finish_reason" in outcome:
                lines.append({"id": item_id, "line": line, "text": outcome["text"], "tokens": len(outcome["tokens"]),
                              "finish_reason": outcome["finish_reason"], "seed": outcome["seed"]})
            elif "top" in outcome:
                top = [{"label": labels[i] if i < len(labels) else str(i), "index": i, "score": p} for i, p in outcome["top"][0]]
                lines.append({"id": item_id, "line": line, "top": top})
            else:
                images.append(from_wire(outcome["images"])[0])
                image_ids.append(item_id)
        folder = Path(record["dir"])
        if spec["op"] == "denoise":
            arrays = {"images": np.stack(images) if images else np.zeros((0,), np.float32),
                      "ids": np.array(image_ids, dtype=str)}
            files = [layout.write_file(folder, layout.shard_name("denoised", chunk, ".npz"), layout.npz_bytes(arrays), start, count)]
        else:
            files = [layout.write_file(folder, layout.shard_name("out", chunk, ".jsonl"), _jsonl(lines), start, count)]
        errors.sort(key=lambda e: e["line"])
        part = layout.write_file(folder, layout.shard_name("errors", chunk, ".jsonl"), _jsonl(errors), start, count)
        return {"files": files, "errors": part["path"], "failed": len(errors), "provider": provider}


def _check_image(image: np.ndarray, spec: dict[str, Any]) -> None:
    """What the gateway checks of an online request's image (the serving loops trust it):
    items of a job come from a file, so they are checked here, each alone."""
    expected = (spec["channels"], *spec.get("size", image.shape[1:]))
    if image.shape != tuple(expected):
        raise ValueError(f"image must be {tuple(expected)} (C, H, W), got {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError("image has NaN or infinite values")


def _model(record: dict[str, Any]) -> str:
    return record["model"].partition(":")[0]


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)
