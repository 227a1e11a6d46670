"""The model repository: `<root>/<name>/<version>/model.onnx` plus `manifest.json`.

The manifest is the contract between `genserve.export` (which writes it) and the workers and
gateway (which read it): kind, serving loop, ONNX files with their sha256, input/output specs,
labels, training data, held-out metrics and tool versions. Clients name models
("vae", "vae:2"), never paths; names and versions are validated before they touch the disk.
"vae" means the version named in `<root>/vae/default_version` when an operator pinned one
(ModelService.SetDefaultVersion writes it), else the newest (the gateway's catalog, which
also checks readiness, takes the newest ready one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, Field

from genserve.errors import InvalidArgumentError, ModelNotFoundError, ModelNotReadyError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DEFAULT_VERSION = "default_version"  # <root>/<name>/default_version: the version "name" is pinned to
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")


class TensorSpec(BaseModel):
    """One input or output of an ONNX graph; -1 marks a dynamic dimension."""

    name: str
    shape: list[int]
    dtype: str


class OnnxFile(BaseModel):
    """One ONNX file of a model version and the graph signature it was exported with."""

    path: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class ImageSpec(BaseModel):
    """Layout of images a model produces or consumes: (C, H, W) float32 in [low, high]."""

    channels: int
    height: int
    width: int
    low: float = 0.0
    high: float = 1.0


class ServingHints(BaseModel):
    """Per-model serving knobs the export measured; the worker's settings may override them."""

    max_batch_size: int = 256  # samples in one ONNX Runtime call
    # ONNX Runtime intra-op threads the model runs best with; 0: the worker's default (cores /
    # worker processes). A worker's GENSERVE_WORKER__INTRA_OP_THREADS overrides it.
    intra_op_threads: int = 0


class Manifest(BaseModel):
    """Everything known about one model version; written at export, read when serving."""

    format_version: int = 1
    name: str
    version: str
    kind: str  # model family: "vae", "dae", "gan", "classifier", "gpt", ...
    loop: str  # serving loop, a genserve.protocol.Loop value; the worker picks its code by it
    description: str = ""
    files: dict[str, OnnxFile]  # role -> file; role "model" (model.onnx) is the serving graph
    config: dict[str, Any] = Field(default_factory=dict)  # hyperparameters to rebuild the model
    latent_dim: int = 0  # latent-variable generators only
    image: ImageSpec | None = None  # image produced (generators) or consumed (denoisers, classifiers)
    labels: list[str] = Field(default_factory=list)  # classes, for conditional models and classifiers
    preprocess: dict[str, Any] = Field(default_factory=dict)
    postprocess: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)  # data set, split sizes, epochs, time
    metrics: dict[str, float] = Field(default_factory=dict)  # held-out metrics measured at export
    parity: dict[str, float] = Field(default_factory=dict)  # ONNX Runtime vs PyTorch max abs diff
    serving: ServingHints = Field(default_factory=ServingHints)
    tools: dict[str, str] = Field(default_factory=dict)  # versions of torch, onnx, onnxruntime, ...
    created: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def conditional(self) -> bool:
        return self.loop == "latent_sampler" and bool(self.labels)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_model_ref(ref: str) -> tuple[str, str | None]:
    """Split "name" or "name:version" and validate both parts."""
    if not isinstance(ref, str) or not ref:
        raise InvalidArgumentError("model must be a name such as 'vae' or 'vae:1', got ''")
    name, colon, version = ref.partition(":")
    if colon and not version:
        raise InvalidArgumentError(f"model version after ':' must be a positive integer, got {ref[:80]!r}")
    if not NAME_RE.match(name):
        raise InvalidArgumentError(
            f"model name must match {NAME_RE.pattern} (lower-case letters, digits, '-', '_'), "
            f"got {name[:80]!r}"
        )
    if version and not VERSION_RE.match(version):
        raise InvalidArgumentError(f"model version must be a positive integer, got {version[:20]!r}")
    return name, version or None


class ModelRepository:
    """Read-only view of a repository root; re-reads the disk so new versions appear live."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME_RE.match(p.name))

    def versions(self, name: str) -> list[str]:
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        found = [
            p.name
            for p in model_dir.iterdir()
            if VERSION_RE.match(p.name) and (p / MANIFEST).is_file()
        ]
        return sorted(found, key=int)

    def manifests(self) -> list[Manifest]:
        """Every readable manifest; a broken one is logged and skipped, not fatal."""
        return self.scan()[0]

    def scan(self) -> tuple[list[Manifest], dict[str, str]]:
        """Every readable manifest, and "name:version" -> why, for each one that is not."""
        found, unreadable = [], {}
        for name in self.names():
            for version in self.versions(name):
                try:
                    found.append(self.load(name, version))
                except ModelNotReadyError as exc:
                    log.warning("skipping %s:%s: %s", name, version, exc)
                    unreadable[f"{name}:{version}"] = str(exc)
        return found, unreadable

    def pinned_version(self, name: str) -> str | None:
        """The version an operator pinned `name` to (SetDefaultVersion), or None."""
        path = self.root / name / DEFAULT_VERSION
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("ignoring %s: %s", path, exc)
            return None
        if not VERSION_RE.match(text):
            log.warning("ignoring %s: %r is not a version", path, text[:20])
            return None
        return text

    def default_version(self, name: str, versions: list[str]) -> tuple[str, bool]:
        """What "name" resolves to among `versions` (sorted, not empty), and whether by a pin:
        the pinned version while it is there, else the newest. A pin to a version that is gone
        is logged and ignored."""
        pinned = self.pinned_version(name)
        if pinned is not None and pinned in versions:
            return pinned, True
        if pinned is not None:
            log.warning("%s is pinned to version %s, which is gone; %s:%s (the newest) serves instead",
                        name, pinned, name, versions[-1])
        return versions[-1], False

    def pin(self, name: str, version: str | None) -> None:
        """Pin "name" to `version`, or with None remove the pin. The file is replaced
        atomically: a reader on another machine sees the old pin or the new one, never half."""
        parse_model_ref(f"{name}:{version}" if version else name)
        path = self.root / name / DEFAULT_VERSION
        if version is None:
            path.unlink(missing_ok=True)
            return
        fd, staging = tempfile.mkstemp(prefix=f".{DEFAULT_VERSION}-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(version + "\n")
            os.chmod(staging, 0o644)  # mkstemp makes it 0600; workers may run as another user
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise

    def resolve(self, ref: str) -> Manifest:
        """Manifest of "name" (its default version) or "name:version"; NOT_FOUND when absent."""
        name, version = parse_model_ref(ref)
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(f"model {name!r} not found; available models: {known}")
        if version is None:
            version = self.default_version(name, versions)[0]
        elif version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version}; versions: {', '.join(versions)}"
            )
        return self.load(name, version)

    def load(self, name: str, version: str) -> Manifest:
        path = self.root / name / version / MANIFEST
        try:
            return Manifest.model_validate_json(path.read_text())
        except FileNotFoundError as exc:
            raise ModelNotFoundError(f"model {name}:{version} not found") from exc
        except ValueError as exc:
            raise ModelNotReadyError(f"manifest of {name}:{version} is invalid: {exc}") from exc

    def file_path(self, manifest: Manifest, role: str = "model") -> Path:
        return self.root / manifest.name / manifest.version / manifest.files[role].path

    def verified_path(self, manifest: Manifest, role: str = "model") -> Path:
        """Path of an ONNX file after checking, before anything loads it: the file and every
        external-data file it names stay inside the version's directory (no '..', absolute
        path or symlink leading out), its sha256 matches the manifest, it parses as ONNX."""
        directory = (self.root / manifest.name / manifest.version).resolve()
        named = manifest.files[role].path
        path = self.file_path(manifest, role)
        if not _inside(path, directory):
            raise ModelNotReadyError(f"{manifest.ref}: file {named!r} leaves the version directory; refusing to load it")
        if not path.is_file():
            raise ModelNotReadyError(f"{manifest.ref}: file {named} is missing")
        actual = sha256_file(path)
        if actual != manifest.files[role].sha256:
            raise ModelNotReadyError(
                f"{manifest.ref}: sha256 of {named} is {actual[:12]}..., "
                f"the manifest says {manifest.files[role].sha256[:12]}...; refusing to load it"
            )
        check_external_data(path, directory, f"{manifest.ref}: {named}")
        return path


def _inside(path: Path, directory: Path) -> bool:
    """Whether `path`, symlinks followed, lies in `directory` (already resolved)."""
    return path.resolve().is_relative_to(directory)


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of an ONNX graph that can hold external data, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(sub)


def check_external_data(path: Path, directory: Path, what: str) -> None:
    """Parse the graph without its weights; refuse a file that is not ONNX and any external
    data `location` that resolves outside `directory` (ONNX Runtime would open it as named)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelNotReadyError(f"{what} is not a valid ONNX file ({type(exc).__name__}); refusing to load it") from exc
    if model.ir_version == 0 or not model.graph.output:  # an empty or truncated file parses as an empty model
        raise ModelNotReadyError(f"{what} is not a valid ONNX file (no graph); refusing to load it")
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location or Path(location).is_absolute() or not _inside(path.parent / location, directory):
            raise ModelNotReadyError(
                f"{what}: external data {location[:80]!r} of tensor {tensor.name[:40]!r} leaves the version "
                "directory; refusing to load it"
            )


def next_version(root: Path, name: str) -> str:
    versions = ModelRepository(root).versions(name)
    return str(int(versions[-1]) + 1) if versions else "1"


def publish(
    root: Path | str,
    manifest: Manifest,
    files: dict[str, Path],
    extra_files: dict[str, Path] | None = None,
) -> Path:
    """Write a model version atomically: files and manifest land in a temp dir, then rename.

    `files` maps a role to an ONNX file to copy; their sha256 are filled into the manifest.
    `extra_files` (sample grids, tokenizers) are copied alongside without a role.
    """
    root = Path(root)
    parse_model_ref(f"{manifest.name}:{manifest.version}")
    final = root / manifest.name / manifest.version
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are immutable")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{manifest.version}-", dir=final.parent))
    try:
        for role, src in files.items():
            dst_name = "model.onnx" if role == "model" else f"{role}.onnx"
            shutil.copyfile(src, staging / dst_name)
            entry = manifest.files[role]
            entry.path = dst_name
            entry.sha256 = sha256_file(staging / dst_name)
        for dst_name, src in (extra_files or {}).items():
            shutil.copyfile(src, staging / dst_name)
        if not manifest.created:
            manifest.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        (staging / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it 0700; workers may run as another user
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
