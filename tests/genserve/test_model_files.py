"""Model files that must never be loaded: a corrupt graph, a sha256 mismatch, external data or
manifest paths that leave the version directory. Each is refused before ONNX Runtime opens
anything, the version reports not ready with the reason, and a worker answers UNAVAILABLE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genserve.errors import ModelNotReadyError
from genserve.repository import MANIFEST, ModelRepository, sha256_file
from genserve.services.readiness import ReadinessChecker
from genserve.settings import WorkerSettings
from genserve.workers.runtime import ModelCache
from genserve.workers.tasks import execute
from tests.genserve.test_repository import manifest as make_manifest
from tests.support import tiny_onnx


def version_dir(root: Path) -> Path:
    folder = root / "m" / "1"
    folder.mkdir(parents=True)
    return folder


def write_manifest(folder: Path, path: str, file: Path | None = None) -> None:
    """A manifest naming `path`, with the sha256 of `file` (default: the file `path` names)."""
    entry = make_manifest("m", "1")
    entry.files["model"].path = path
    entry.files["model"].sha256 = sha256_file(file or folder / path)
    (folder / MANIFEST).write_text(json.dumps(entry.model_dump()))


def refusal(root: Path) -> str:
    """The reason verified_path refuses the version; also what readiness reports."""
    repository = ModelRepository(root)
    manifest = repository.resolve("m")
    with pytest.raises(ModelNotReadyError) as info:
        repository.verified_path(manifest)
    assert ReadinessChecker(repository).check(manifest) == str(info.value)
    return str(info.value)


def test_a_valid_graph_with_external_data_inside_the_directory_loads(tmp_path: Path):
    """The control: weights in weights.bin beside model.onnx verify, load and run."""
    folder = version_dir(tmp_path)
    tiny_onnx(folder / "model.onnx", external_location="weights.bin")
    write_manifest(folder, "model.onnx")
    repository = ModelRepository(tmp_path)
    assert ReadinessChecker(repository).check(repository.resolve("m")) == ""
    loaded = ModelCache(repository, WorkerSettings(intra_op_threads=1)).get("m")
    out = loaded.onnx.run({"z": np.ones((2, 4), np.float32)})["image"]
    assert out.shape == (2, 4)


@pytest.mark.parametrize("content", [b"not an onnx file at all", b"", bytes(range(256)) * 4])
def test_a_corrupt_graph_whose_sha256_matches_is_refused(tmp_path: Path, content: bytes):
    """Garbage (or an empty file) with a matching sha256 is not ONNX: refused, not INTERNAL."""
    folder = version_dir(tmp_path)
    (folder / "model.onnx").write_bytes(content)
    write_manifest(folder, "model.onnx")
    assert "is not a valid ONNX file" in refusal(tmp_path)


def test_a_sha256_mismatch_is_refused(tmp_path: Path):
    folder = version_dir(tmp_path)
    tiny_onnx(folder / "model.onnx")
    write_manifest(folder, "model.onnx")
    tiny_onnx(folder / "model.onnx", doc="changed after publish")
    assert "sha256 of model.onnx" in refusal(tmp_path)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "link.bin", "sub/../../secret.bin"])
def test_external_data_leaving_the_version_directory_is_refused(tmp_path: Path, location: str):
    """'..', an absolute path, a symlink leading out: refused before ONNX Runtime reads it."""
    folder = version_dir(tmp_path)
    (folder.parent / "secret.bin").write_bytes(np.eye(4, dtype=np.float32).tobytes())
    (folder / "link.bin").symlink_to(folder.parent / "secret.bin")
    tiny_onnx(folder / "model.onnx", external_location=location)
    write_manifest(folder, "model.onnx")
    assert "leaves the version directory" in refusal(tmp_path) and "external data" in refusal(tmp_path)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_a_manifest_path_leaving_the_version_directory_is_refused(tmp_path: Path, kind: str):
    """"path": "../x.onnx", an absolute path or a symlink out, even with a matching sha256."""
    folder = version_dir(tmp_path)
    outside = tiny_onnx(tmp_path / "x.onnx")
    (folder / "link.onnx").symlink_to(outside)
    path = {"dotdot": "../../x.onnx", "absolute": str(outside), "symlink": "link.onnx"}[kind]
    write_manifest(folder, path, file=outside)
    assert "leaves the version directory" in refusal(tmp_path)


def test_a_graph_onnx_runtime_cannot_load_is_not_ready_not_internal(tmp_path: Path):
    """Valid protobuf, invalid graph (a node of an unknown op): the worker answers every request
    of the message UNAVAILABLE with a clear message; the client is told, nothing is lost."""
    import onnx
    from onnx import TensorProto, helper

    folder = version_dir(tmp_path)
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["z"], ["image"])], "bad",
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 4])])
    onnx.save_model(helper.make_model(graph), str(folder / "model.onnx"))
    write_manifest(folder, "model.onnx")
    cache = ModelCache(ModelRepository(tmp_path), WorkerSettings(intra_op_threads=1))
    result = execute({"model": "m", "op": "generate_images", "requests": [{"count": 1}, {"count": 2}]}, cache)
    assert [r["code"] for r in result["results"]] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert "ONNX Runtime could not load model.onnx" in result["results"][0]["message"]
