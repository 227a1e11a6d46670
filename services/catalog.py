"""The gateway's view of the model repository, cached so a request does not read the disk,
and the model administration that changes it (pinning default versions, rescanning now)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from genserve.errors import FailedPreconditionError, ModelNotReadyError
from genserve.repository import Manifest, ModelRepository, parse_model_ref
from genserve.services.readiness import ReadinessChecker

log = logging.getLogger(__name__)


@dataclass
class Rescan:
    """What a scan found that the previous one did not, and what it could not read."""

    added: list[str] = field(default_factory=list)  # "name:version"
    removed: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # "name:version" -> why


def _by_version(refs: set[str]) -> list[str]:
    return sorted(refs, key=lambda ref: (ref.partition(":")[0], int(ref.partition(":")[2])))


class ModelCatalog:
    """Resolves "name[:version]" to a manifest; re-scans the repository every `ttl_s`.

    "name" goes to its pinned version (SetDefaultVersion), else to its newest ready one, else
    (none ready) to its newest."""

    def __init__(self, repository: ModelRepository, ttl_s: float) -> None:
        self.repository = repository
        self.ttl_s = ttl_s
        self.readiness = ReadinessChecker(repository)
        self._by_ref: dict[str, Manifest] = {}
        self._pinned: set[str] = set()  # names whose default is an operator's pin, not the newest
        self._unreadable: dict[str, str] = {}
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

    def pinned(self, name: str) -> bool:
        """Whether `name`'s default version is pinned (and that version is there)."""
        self._refresh()
        return name in self._pinned

    def pin(self, name: str, version: str | None) -> Manifest:
        """Make `version` the default of `name` (None: the newest ready again); the new default.
        NOT_FOUND for an unknown model or version; FAILED_PRECONDITION for a version that is
        not ready or a repository this process cannot write to."""
        if version is not None:
            try:
                manifest = self.repository.resolve(f"{name}:{version}")
            except ModelNotReadyError as exc:  # an unreadable manifest
                raise FailedPreconditionError(f"cannot pin {name}:{version}: {exc}") from exc
            reason = self.readiness.check(manifest)
            if reason:
                raise FailedPreconditionError(f"cannot pin {name}:{version}, it is not ready: {reason}")
        elif not self.repository.versions(name):
            self.repository.resolve(name)  # NOT_FOUND listing the models, as for a pin
        try:
            self.repository.pin(name, version)
        except OSError as exc:
            raise FailedPreconditionError(
                f"cannot write the pin of {name} into the model repository ({exc.strerror or exc}); "
                "the gateway needs write access to <repository>/<name>/ to pin versions") from exc
        self._loaded_at = float("-inf")  # this gateway follows at once; others within ttl_s
        return self.resolve(name)

    def rescan(self) -> Rescan:
        """Read the repository now; what changed since the previous scan."""
        before = {ref for ref in self._by_ref if ":" in ref}
        self._loaded_at = float("-inf")
        self._refresh()
        after = {ref for ref in self._by_ref if ":" in ref}
        return Rescan(_by_version(after - before), _by_version(before - after), dict(self._unreadable))

    def _refresh(self) -> None:
        if time.monotonic() - self._loaded_at < self.ttl_s:
            return
        manifests, unreadable = self.repository.scan()  # sorted by name, then version
        by_ref = {m.ref: m for m in manifests}
        versions: dict[str, list[str]] = {}
        for manifest in manifests:
            versions.setdefault(manifest.name, []).append(manifest.version)
        pinned = set()
        for name, found in versions.items():
            default, is_pinned = self.repository.default_version(name, found)
            if not is_pinned:
                default = self._newest_ready(name, found, by_ref)
            by_ref[name] = by_ref[f"{name}:{default}"]
            if is_pinned:
                pinned.add(name)
            previous = self._by_ref.get(name)
            if previous is not None and (previous.version, name in self._pinned) != (default, is_pinned):
                log.warning("requests for %s now go to %s:%s (%s)", name, name, default,
                            "pinned" if is_pinned else "the newest ready version")
        self._by_ref, self._pinned, self._unreadable = by_ref, pinned, unreadable
        self._loaded_at = time.monotonic()

    def _newest_ready(self, name: str, found: list[str], by_ref: dict[str, Manifest]) -> str:
        """The newest version that is ready, so that a bad publish does not take the name's
        traffic; the newest when none is (its requests then say why). Cached per file state."""
        for version in reversed(found):
            if not self.readiness.check(by_ref[f"{name}:{version}"]):
                return version
        return found[-1]
