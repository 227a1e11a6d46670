"""A job's folder on the jobs volume: shards written atomically, the manifest, verification.

    <root>/<job id>/
        shards/images-000000.npy ...   generator jobs: one shard per chunk (.npy or .npz)
        shards/out-000000.jsonl ...    input-file jobs: one output line per input item, by id
        errors.jsonl                   input-file jobs: {"id", "line", "error"} per failed item
        preview.png                    optional contact sheet of the first 64 images
        manifest.json                  written last: parameters, model, provider, every file's
                                       item range, bytes and sha256

Every file is written to a temporary name in the same folder and renamed over its final name,
so a reader sees a whole file or none, and a re-run chunk replaces its own shard with the same
bytes (shards hold nothing but the items: no timestamps).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
PREVIEW = "preview.png"
PROMPTS = "prompts.jsonl"  # a text-generation job's lines as the gateway checked them (token ids or the error)
SHARDS = "shards"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: an .npz shard's bytes depend on its items only


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, *parts: bytes | memoryview, fsync: bool = False) -> None:
    """Write `parts` to `path` so that readers never see a partial file. A killed process
    leaves the old file or the new one; `fsync` also covers a machine losing power (it cost
    about a third of a VAE chunk's time on this machine's disk, so it is off by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    with open(tmp, "wb") as f:
        for part in parts:
            f.write(part)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz (what np.load reads) with fixed timestamps, unlike np.savez."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH), npy_bytes(array))
    return buffer.getvalue()


def shard_name(kind: str, chunk: int, suffix: str) -> str:
    return f"{SHARDS}/{kind}-{chunk:06d}{suffix}"


def write_file(folder: Path, relative: str, data: bytes, start: int, count: int, fsync: bool = False) -> dict[str, Any]:
    """Write one result file; its manifest entry."""
    atomic_write(folder / relative, data, fsync=fsync)
    return {"path": relative, "start": start, "count": count, "bytes": len(data), "sha256": sha256(data)}


def write_npy(folder: Path, relative: str, array: np.ndarray, start: int, count: int, fsync: bool = False) -> dict[str, Any]:
    """The same bytes as np.save, written and hashed from the array's memory (no copy)."""
    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    body = memoryview(array).cast("B")
    digest = hashlib.sha256(header.getvalue())
    digest.update(body)
    atomic_write(folder / relative, header.getvalue(), body, fsync=fsync)
    size = len(header.getvalue()) + body.nbytes
    return {"path": relative, "start": start, "count": count, "bytes": size, "sha256": digest.hexdigest()}


@functools.cache
def _writer_pool() -> Any:
    """One writer thread for every shard of the process (a thread per shard cost its start
    on every chunk); parts of one shard are written in the order they were appended."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(1, thread_name_prefix="genserve-shard")


class NpyShardWriter:
    """One .npy shard written while its rows are still being computed: the header first (the
    shape is known), then each part of rows on a writer thread that also hashes it (file
    writes and sha256 release the GIL, so they overlap the next ONNX Runtime call), then
    the rename. The bytes are np.save's."""

    def __init__(self, folder: Path, relative: str, shape: tuple[int, ...], dtype: np.dtype, start: int, fsync: bool = False) -> None:
        self.path = folder / relative
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        self._entry = {"path": relative, "start": start, "count": shape[0]}
        self._fsync = fsync
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
        self._file = open(self._tmp, "wb")
        self._file.write(header.getvalue())
        self._digest = hashlib.sha256(header.getvalue())
        self._size = len(header.getvalue())
        self._pool = _writer_pool()
        self._pending: list[Any] = []

    def append(self, rows: np.ndarray) -> None:
        self._pending.append(self._pool.submit(self._write, np.ascontiguousarray(rows)))

    def _write(self, rows: np.ndarray) -> None:
        body = memoryview(rows).cast("B")
        self._digest.update(body)
        self._file.write(body)
        self._size += body.nbytes

    def close(self) -> dict[str, Any]:
        """Wait for the writes, rename into place; the manifest entry."""
        try:
            for pending in self._pending:
                pending.result()
            if self._fsync:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        finally:
            self.abort()
        return {**self._entry, "bytes": self._size, "sha256": self._digest.hexdigest()}

    def abort(self) -> None:
        for pending in self._pending:  # nothing of ours may still be writing to the file
            pending.exception()
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    atomic_write(folder / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: Path, manifest: dict[str, Any] | None = None) -> list[str]:
    """Problems with a job's files against its manifest; empty when every file checks out."""
    manifest = manifest if manifest is not None else read_manifest(folder)
    problems = []
    for entry in manifest["files"]:
        path = folder / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{entry['path']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs from the manifest")
    return problems


def load_images(folder: Path, manifest: dict[str, Any]) -> np.ndarray:
    """Every image of a finished generator job, in index order (for checks and small jobs)."""
    parts = []
    for entry in sorted(manifest["files"], key=lambda e: e["start"]):
        if entry["path"].endswith(".npy"):
            parts.append(np.load(folder / entry["path"]))
        elif entry["path"].endswith(".npz"):
            parts.append(np.load(folder / entry["path"])["images"])
    return np.concatenate(parts)
