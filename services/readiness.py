"""Whether a model version can be served, as ListModels and GetModel report it.

Ready means what a worker checks before it loads a version: every ONNX file named in the
manifest is there with the sha256 the manifest records, and this build knows the manifest's
serving loop. Hashing a large graph takes a while, so a result is kept until the file's size
or modification time changes; a version is immutable once published, so that is rare.
"""

from __future__ import annotations

import os

from genserve.errors import ModelNotReadyError
from genserve.protocol import LOOP_NAMES
from genserve.repository import Manifest, ModelRepository

Signature = tuple[tuple[str, int, int], ...]  # (path, size, mtime_ns) per file


class ReadinessChecker:
    """`check(manifest)` -> "" when ready, else the reason; sha256 results cached per file state."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self._cache: dict[str, tuple[Signature, str]] = {}

    def check(self, manifest: Manifest) -> str:
        if manifest.loop not in LOOP_NAMES:
            return f"serving loop {manifest.loop!r} is unknown to this build; loops: {', '.join(LOOP_NAMES)}"
        signature = self._signature(manifest)
        cached = self._cache.get(manifest.ref)
        if cached is not None and cached[0] == signature:
            return cached[1]
        reason = ""
        try:
            for role in manifest.files:
                self.repository.verified_path(manifest, role)
        except ModelNotReadyError as exc:
            reason = str(exc)
        self._cache[manifest.ref] = (signature, reason)
        return reason

    def _signature(self, manifest: Manifest) -> Signature:
        found = []
        for role in manifest.files:
            path = self.repository.file_path(manifest, role)
            try:
                stat = os.stat(path)
                found.append((str(path), stat.st_size, stat.st_mtime_ns))
            except OSError:
                found.append((str(path), -1, -1))
        return tuple(found)
