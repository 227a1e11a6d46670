"""The CUDA execution provider path: runs only where ONNX Runtime can really use a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.workers.runtime import OnnxModel


def _cuda_usable() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _cuda_usable(), reason="CUDA execution provider not usable here")]


@pytest.mark.parametrize("io_binding", [True, False])
def test_cuda_session_matches_the_cpu(repo: Path, io_binding: bool):
    """With provider cuda the session really runs on CUDA and agrees with the CPU to 1e-4."""
    repository = ModelRepository(repo)
    path = str(repository.verified_path(repository.resolve("vae")))
    gpu = OnnxModel.load(path, WorkerSettings(execution_provider="cuda", io_binding=io_binding))
    cpu = OnnxModel.load(path, WorkerSettings(execution_provider="cpu"))
    assert gpu.provider == "CUDAExecutionProvider"
    z = np.random.default_rng(0).standard_normal((64, 4), dtype=np.float32)
    np.testing.assert_allclose(gpu.run({"z": z})["image"], cpu.run({"z": z})["image"], atol=1e-4)


def test_cuda_batch_invariance(repo: Path):
    """On CUDA too, a row's output does not depend on the rows batched with it."""
    repository = ModelRepository(repo)
    path = str(repository.verified_path(repository.resolve("vae")))
    gpu = OnnxModel.load(path, WorkerSettings(execution_provider="cuda"))
    z = np.random.default_rng(1).standard_normal((64, 4), dtype=np.float32)
    batch = gpu.run({"z": z})["image"]
    alone = gpu.run({"z": z[17:18]})["image"]
    np.testing.assert_array_equal(alone[0], batch[17])
