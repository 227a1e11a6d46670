"""The gateway's view of the model repository, cached so a request does not read the disk."""

from __future__ import annotations

import time

from genserve.repository import Manifest, ModelRepository, parse_model_ref


class ModelCatalog:
    """Resolves "name[:version]" to a manifest; re-scans the repository every `ttl_s`."""

    def __init__(self, repository: ModelRepository, ttl_s: float) -> None:
        self.repository = repository
        self.ttl_s = ttl_s
        self._by_ref: dict[str, Manifest] = {}
        self._loaded_at = float("-inf")

    def resolve(self, ref: str) -> Manifest:
        self._refresh()
        manifest = self._by_ref.get(ref)
        if manifest is None:
            parse_model_ref(ref)  # INVALID_ARGUMENT for malformed names, before NOT_FOUND
            manifest = self.repository.resolve(ref)  # NOT_FOUND with the list of models
        return manifest

    def all(self) -> list[Manifest]:
        self._refresh()
        found = [m for ref, m in self._by_ref.items() if ":" in ref]
        return sorted(found, key=lambda m: (m.name, int(m.version)))

    def _refresh(self) -> None:
        if time.monotonic() - self._loaded_at < self.ttl_s:
            return
        by_ref: dict[str, Manifest] = {}
        for manifest in self.repository.manifests():
            by_ref[manifest.ref] = manifest
            by_ref[manifest.name] = manifest  # versions are sorted: the latest wins
        self._by_ref = by_ref
        self._loaded_at = time.monotonic()
