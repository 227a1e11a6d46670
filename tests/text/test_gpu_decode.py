"""The GPT's decode loop on the CUDA execution provider: runs only where ONNX Runtime can
really use a GPU (bench/gpu.sh runs it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.tokenization import TextCodec
from genserve.workers.autoregressive.scheduler import DecodeScheduler
from genserve.workers.runtime import ModelCache
from tests.text.conftest import GPT_NAME

PROVIDER = "cuda"  # the provider under test; the CPU is the reference


def _usable(provider: str) -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return provider == "cpu" or "CUDAExecutionProvider" in ort.get_available_providers()


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _usable(PROVIDER), reason="CUDA execution provider not usable here")]


def generate(gpt_repo: Path, provider: str, io_binding: bool, prompts: list[str]) -> list[dict]:
    """Greedy generations of `prompts`, all at once through one decode scheduler."""
    settings = WorkerSettings(execution_provider=provider, io_binding=io_binding, intra_op_threads=1)
    loaded = ModelCache(ModelRepository(gpt_repo), settings).get(f"{GPT_NAME}:1")
    if provider == "cuda":
        assert loaded.onnx.provider == "CUDAExecutionProvider"
    codec = TextCodec.load(loaded.directory, loaded.manifest)
    scheduler = DecodeScheduler(loaded, codec, None)
    try:
        seqs = [scheduler.submit({"prompt_ids": codec.encode(p), "max_new_tokens": 24, "seed": 0,
                                  "temperature": 0.0, "logprobs": True}) for p in prompts]
        return [s.result(120) for s in seqs]
    finally:
        scheduler.close()


@pytest.mark.parametrize("io_binding", [True, False])
def test_decode_on_the_gpu_matches_the_cpu(gpt_repo: Path, io_binding: bool):
    """Prefill and shared decode steps (ragged prompts, KV cache fed back every step) give the
    CPU's greedy tokens, with log-probabilities within 1e-3."""
    prompts = ["The ", "A list comprehension consists of", "If the"]
    device = generate(gpt_repo, PROVIDER, io_binding, prompts)
    cpu = generate(gpt_repo, "cpu", False, prompts)
    for got, want in zip(device, cpu):
        assert got["ok"] and want["ok"]
        assert [t[0] for t in got["tokens"]] == [t[0] for t in want["tokens"]]
        np.testing.assert_allclose([t[2] for t in got["tokens"]], [t[2] for t in want["tokens"]], atol=1e-3)
