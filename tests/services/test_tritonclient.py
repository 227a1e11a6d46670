"""NVIDIA's stock `tritonclient.grpc` calls the tensor models with no genserve code: a real
`genserve worker` process behind Redis, the client in its own virtualenv and process
(`make tritonclient`: it pins protobuf and grpcio apart from ours), outputs checked bit for
bit against ONNX Runtime in this process, and concurrent requests seen sharing task messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.v1 import models_pb2
from genserve.workers.runtime import OnnxModel

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-tritonclient" / "bin" / "python"
CONCURRENT = 16  # requests per model, all in flight at once


@pytest.fixture(scope="module")
def triton_python() -> Path:
    """The client's virtualenv, built on first use by `make tritonclient`."""
    built = subprocess.run(["make", "-s", "tritonclient", f"PYTHON={sys.executable}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    if built.returncode != 0 or not PYTHON.exists():
        pytest.skip(f"cannot build .venv-tritonclient (tritonclient[grpc] from the package index): {built.stderr[-500:]}")
    return PYTHON


def feeds_for(model: str, i: int) -> dict[str, np.ndarray]:
    """Request i's inputs: a few rows of the model's own inputs, seeded by i."""
    rng = np.random.default_rng(100 + i)
    rows = 1 + i % 3
    if model in ("gan", "cgan"):
        feeds = {"z": rng.standard_normal((rows, 8), dtype=np.float32)}
        if model == "cgan":
            feeds["label"] = rng.integers(0, 10, rows).astype(np.int64)
        return feeds
    return {"image": rng.random((rows, 1, 28, 28), dtype=np.float32)}


OUTPUTS = {"gan": "image", "cgan": "image", "dae": "denoised", "digits": "logits"}


def batch_counts(gateway, model: str) -> dict[int, int]:
    info = gateway.models.GetModel(models_pb2.GetModelRequest(model=model), timeout=10)
    return dict(info.batch_stats.requests_per_message)


def test_tritonclient_infers_every_tensor_model_batched_and_exact(image_gateway, image_repo, triton_python, tmp_path):
    """16 concurrent tritonclient ModelInfer calls per model: ONNX Runtime's bytes, shared messages."""
    requests, expected = [], []
    for model, output in OUTPUTS.items():
        for i in range(CONCURRENT):
            feeds = feeds_for(model, i)
            paths = {}
            for name, array in feeds.items():
                paths[name] = str(tmp_path / f"{model}-{i}-{name}.npy")
                np.save(paths[name], array)
            requests.append({"model": model, "inputs": paths, "outputs": [output]})
            expected.append((model, output, feeds))
    before = {model: batch_counts(image_gateway, model) for model in OUTPUTS}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"address": image_gateway.address, "out": str(tmp_path), "requests": requests}))
    run = subprocess.run([str(triton_python), str(Path(__file__).with_name("tritonclient_driver.py")), str(plan)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["errors"] == [] and report["live"] and report["ready"]
    assert report["models"]["cgan"]["ready"]
    inputs = report["models"]["cgan"]["metadata"]["inputs"]
    assert [(t["name"], t["datatype"]) for t in inputs] == [("z", "FP32"), ("label", "INT64")]

    repository = ModelRepository(image_repo)
    sessions = {m: OnnxModel.load(str(repository.verified_path(repository.resolve(m))), WorkerSettings(intra_op_threads=1))
                for m in OUTPUTS}
    for i, (model, output, feeds) in enumerate(expected):
        got = np.load(tmp_path / f"{i}.{output}.npy")
        np.testing.assert_array_equal(got, sessions[model].run(feeds)[output], err_msg=f"{model} request {i}")
    grouped = 0
    for model in OUTPUTS:
        after = batch_counts(image_gateway, model)
        grouped += sum(n for size, n in after.items() if size > 1) - sum(n for size, n in before[model].items() if size > 1)
    assert grouped > 0, "no task message carried more than one ModelInfer request"
