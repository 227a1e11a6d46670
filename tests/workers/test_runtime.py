"""ONNX Runtime sessions, the per-process model cache and the worker's `execute` protocol.

The model is a tiny decoder built with onnx.helper (no torch): z (n, 4) -> MatMul/Add/Tanh ->
MatMul/Add/Sigmoid -> image (n, 1, 2, 2), published into a temporary repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from genserve.errors import ModelNotFoundError, ModelNotReadyError
from genserve.repository import (
    ImageSpec,
    Manifest,
    ModelRepository,
    OnnxFile,
    ServingHints,
    TensorSpec,
    publish,
)
from genserve.settings import WorkerSettings
from genserve.tensors import from_wire
from genserve.workers.runtime import ModelCache, OnnxModel, intra_op_threads, requested_providers
from genserve.workers.tasks import execute

LATENT_DIM = 4
HIDDEN = 64
CPU = "CPUExecutionProvider"


def decoder_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((LATENT_DIM, HIDDEN)).astype(np.float32),
        "b1": rng.standard_normal(HIDDEN).astype(np.float32),
        "w2": (rng.standard_normal((HIDDEN, 4)) / 8).astype(np.float32),
        "b2": rng.standard_normal(4).astype(np.float32),
    }


def decode_reference(z: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the tiny decoder computes, in numpy."""
    w = decoder_weights(seed)
    logits = np.tanh(z @ w["w1"] + w["b1"]) @ w["w2"] + w["b2"]
    return (1.0 / (1.0 + np.exp(-logits))).reshape(-1, 1, 2, 2)


def write_decoder(path: Path, seed: int = 0) -> Path:
    """z (batch, 4) float32 -> image (batch, 1, 2, 2) float32 in (0, 1)."""
    weights = [numpy_helper.from_array(v, k) for k, v in decoder_weights(seed).items()]
    weights.append(numpy_helper.from_array(np.array([-1, 1, 2, 2], dtype=np.int64), "shape"))
    nodes = [
        helper.make_node("MatMul", ["z", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["h4"]),
        helper.make_node("Sigmoid", ["h4"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["image"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_decoder",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", LATENT_DIM])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime this project supports
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tiny_manifest(name: str = "vae", version: str = "1", max_batch_size: int = 256) -> Manifest:
    onnx_file = OnnxFile(
        path="model.onnx",
        sha256="",
        inputs=[TensorSpec(name="z", shape=[-1, 4], dtype="float32")],
        outputs=[TensorSpec(name="image", shape=[-1, 1, 2, 2], dtype="float32")],
    )
    return Manifest(
        name=name,
        version=version,
        kind="vae",
        loop="latent_sampler",
        latent_dim=LATENT_DIM,
        image=ImageSpec(channels=1, height=2, width=2),
        files={"model": onnx_file},
        serving=ServingHints(max_batch_size=max_batch_size),
    )


def tiny_repository(
    root: Path, name: str = "vae", version: str = "1", max_batch_size: int = 256
) -> Path:
    """Publish the tiny decoder as <root>/<name>/<version>; returns the repository root."""
    root.mkdir(parents=True, exist_ok=True)
    source = write_decoder(root.parent / f"{name}-{version}-source.onnx")
    publish(root, tiny_manifest(name, version, max_batch_size), {"model": source})
    return root


def cpu_settings(threads: int = 1, **overrides: object) -> WorkerSettings:
    return WorkerSettings(execution_provider="cpu", intra_op_threads=threads, **overrides)


def tiny_cache(root: Path, threads: int = 1, **overrides: object) -> ModelCache:
    return ModelCache(ModelRepository(root), cpu_settings(threads, **overrides))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_repository(tmp_path_factory.mktemp("runtime") / "repository")


@pytest.mark.parametrize(
    "choice, available, expected",
    [
        ("auto", ["CUDAExecutionProvider", CPU], ["CUDAExecutionProvider", CPU]),
        (
            "auto",
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU],
            ["CUDAExecutionProvider", CPU],
        ),
        ("auto", [CPU], [CPU]),
        ("cpu", ["CUDAExecutionProvider", CPU], [CPU]),
        ("cuda", ["CUDAExecutionProvider", CPU], ["CUDAExecutionProvider", CPU]),
        ("cuda", ["AzureExecutionProvider", CPU], [CPU]),
        (
            "tensorrt",
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU],
        ),
        ("tensorrt", ["CUDAExecutionProvider", CPU], ["CUDAExecutionProvider", CPU]),
        ("tensorrt", [CPU], [CPU]),
    ],
)
def test_requested_providers_keep_available_ones_best_first_with_cpu_last(
    choice: str, available: list[str], expected: list[str]
) -> None:
    """Each choice asks only for providers that are available, best first, the CPU always last."""
    assert requested_providers(choice, available) == expected


def test_explicit_intra_op_threads_are_used_as_given() -> None:
    """A positive intra_op_threads is taken as is, whatever the core count."""
    assert intra_op_threads(WorkerSettings(intra_op_threads=3, concurrency=8)) == 3


def test_a_model_s_thread_hint_is_used_unless_the_operator_set_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifest serving.intra_op_threads applies when the worker's setting is 0 (automatic)."""
    monkeypatch.setattr("genserve.workers.runtime.os.cpu_count", lambda: 16)
    assert intra_op_threads(WorkerSettings(intra_op_threads=0), hint=1) == 1
    assert intra_op_threads(WorkerSettings(intra_op_threads=4), hint=1) == 4
    assert intra_op_threads(WorkerSettings(intra_op_threads=0), hint=0) == 16


@pytest.mark.parametrize(
    "cores, concurrency, expected", [(16, 1, 16), (16, 4, 4), (16, 32, 1), (None, 1, 1), (6, 0, 6)]
)
def test_automatic_intra_op_threads_share_the_cores_between_processes(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, concurrency: int, expected: int
) -> None:
    """intra_op_threads 0 means cores // processes, at least 1 (unknown core count: 1)."""
    monkeypatch.setattr("genserve.workers.runtime.os.cpu_count", lambda: cores)
    assert intra_op_threads(WorkerSettings(intra_op_threads=0, concurrency=concurrency)) == expected


def test_onnx_model_loads_on_the_cpu_and_runs(repo: Path) -> None:
    """OnnxModel.load picks the CPU provider, applies the thread count and computes the graph."""
    model = OnnxModel.load(str(repo / "vae" / "1" / "model.onnx"), cpu_settings(threads=2))
    assert model.provider == CPU
    assert model.input_names == ["z"] and model.output_names == ["image"]
    assert model.session.get_session_options().intra_op_num_threads == 2
    z = np.random.default_rng(1).standard_normal((5, 4), dtype=np.float32)
    out = model.run({"z": z})
    assert list(out) == ["image"] and out["image"].shape == (5, 1, 2, 2)
    np.testing.assert_allclose(out["image"], decode_reference(z), atol=1e-5)


def test_cuda_request_without_cuda_falls_back_to_the_cpu(repo: Path) -> None:
    """Asking for CUDA where it is not available still loads the model, on the CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here; the fallback is not exercised")
    model = OnnxModel.load(
        str(repo / "vae" / "1" / "model.onnx"),
        WorkerSettings(execution_provider="cuda", intra_op_threads=1),
    )
    assert model.provider == CPU and model._io_binding is False


def test_model_cache_loads_once(repo: Path) -> None:
    """The second get of the same ref returns the very same loaded model and session."""
    cache = tiny_cache(repo)
    first = cache.get("vae:1")
    assert cache.get("vae:1") is first
    assert first.manifest.ref == "vae:1" and first.onnx.provider == CPU


def test_model_cache_resolves_the_latest_version(tmp_path: Path) -> None:
    """A bare name loads the newest version; a pinned ref loads that version."""
    root = tiny_repository(tmp_path / "repository", version="2")
    tiny_repository(root, version="10")
    cache = tiny_cache(root)
    assert cache.get("vae").manifest.ref == "vae:10"
    assert cache.get("vae:2").manifest.ref == "vae:2"


def test_worker_max_batch_size_overrides_the_manifest(repo: Path) -> None:
    """WorkerSettings.max_batch_size > 0 replaces the manifest's hint; 0 keeps it."""
    assert tiny_cache(repo).get("vae:1").max_batch_size == 256
    assert tiny_cache(repo, max_batch_size=8).get("vae:1").max_batch_size == 8


def test_model_cache_missing_role_is_not_ready(repo: Path) -> None:
    """Asking for a graph role the manifest lacks raises ModelNotReadyError naming it."""
    with pytest.raises(ModelNotReadyError, match="vae:1 has no 'encoder' graph"):
        tiny_cache(repo).get("vae:1", role="encoder")


def test_model_cache_unknown_model_is_not_found(repo: Path) -> None:
    """An unknown model raises ModelNotFoundError and caches nothing."""
    cache = tiny_cache(repo)
    with pytest.raises(ModelNotFoundError):
        cache.get("gan")
    assert cache._loaded == {}


def test_execute_runs_every_request_and_reports_calls_and_provider(repo: Path) -> None:
    """execute returns one ok outcome per request, the provider, and the rows of each ONNX call."""
    payload = {
        "model": "vae:1",
        "op": "generate_images",
        "requests": [
            {"count": 2, "seed": 1, "tensor": True},
            {"count": 3, "seed": 2, "tensor": True},
        ],
    }
    result = execute(payload, tiny_cache(repo))
    assert result["provider"] == CPU and result["calls"] == [5]
    assert [r["ok"] for r in result["results"]] == [True, True]
    assert [from_wire(r["images"]).shape for r in result["results"]] == [(2, 1, 2, 2), (3, 1, 2, 2)]
    assert ":" in result["worker"]


def test_execute_unknown_model_fails_every_request_not_found(repo: Path) -> None:
    """A message for a model the repository lacks gets a NOT_FOUND outcome for each request."""
    payload = {
        "model": "gan:1",
        "op": "generate_images",
        "requests": [{"count": 1, "seed": s} for s in range(3)],
    }
    result = execute(payload, tiny_cache(repo))
    assert len(result["results"]) == 3
    for outcome in result["results"]:
        assert outcome["ok"] is False and outcome["code"] == "NOT_FOUND"
        assert "model 'gan' not found; available models: vae" in outcome["message"]
    assert result["calls"] == [] and result["provider"] == ""


def test_execute_checksum_mismatch_fails_every_request_unavailable(tmp_path: Path) -> None:
    """A model file modified after publish gives UNAVAILABLE outcomes that mention sha256."""
    root = tiny_repository(tmp_path / "repository")
    with open(root / "vae" / "1" / "model.onnx", "ab") as f:
        f.write(b"\0")
    payload = {"model": "vae:1", "op": "generate_images", "requests": [{"count": 1, "seed": 1}] * 2}
    result = execute(payload, tiny_cache(root))
    assert [r["code"] for r in result["results"]] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert all(
        "sha256" in r["message"] and "refusing to load it" in r["message"]
        for r in result["results"]
    )


def test_execute_unknown_op_is_invalid_argument(repo: Path) -> None:
    """An op the model's loop does not serve fails each request with INVALID_ARGUMENT."""
    payload = {"model": "vae:1", "op": "classify", "requests": [{"count": 1, "seed": 1}]}
    [outcome] = execute(payload, tiny_cache(repo))["results"]
    assert outcome == {
        "ok": False,
        "code": "INVALID_ARGUMENT",
        "message": "vae:1 (latent_sampler) does not serve classify",
    }
