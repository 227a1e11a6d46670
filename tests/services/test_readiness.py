"""ListModels readiness: files that verify against their sha256 and a loop this build knows."""

from __future__ import annotations

import shutil
from pathlib import Path

from genserve.repository import ModelRepository
from genserve.services.readiness import ReadinessChecker


def test_a_version_whose_file_changed_is_not_ready(repo: Path, tmp_path: Path):
    """A published version is ready; after its model.onnx changes, the reason names the sha256."""
    root = tmp_path / "repository"
    shutil.copytree(repo / "vae", root / "vae")
    repository = ModelRepository(root)
    checker = ReadinessChecker(repository)
    manifest = repository.resolve("vae:1")
    assert checker.check(manifest) == ""
    with open(repository.file_path(manifest), "ab") as f:
        f.write(b"\0")
    assert "sha256 of model.onnx" in checker.check(manifest)


def test_a_version_with_an_unknown_loop_is_not_ready(repo: Path):
    """A manifest naming a loop this build lacks is listed but not ready."""
    repository = ModelRepository(repo)
    manifest = repository.resolve("vae:1").model_copy(update={"loop": "diffusion"})
    assert "serving loop 'diffusion' is unknown" in ReadinessChecker(repository).check(manifest)
