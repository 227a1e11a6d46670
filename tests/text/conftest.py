"""Fixtures for the GPT tests: a tiny GPT built through the real pipeline, its worker, gateways.

The GPT is trained for a few dozen steps on a dozen pydoc topics (seconds): its text is
gibberish, but every part of the path is the real one (tokenizer, training, ONNX export with
the KV-cache parity check, manifest, worker, gateway), and seeds make every output exact.
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from genserve.settings import GatewaySettings, Settings
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

HAS_TORCH = importlib.util.find_spec("torch") is not None
if not HAS_TORCH:  # the export side (and the tiny model) needs the `train` extra
    collect_ignore_glob = ["test_*.py"]

GPT_NAME = "tinygpt"


def tiny_gpt_config():  # -> GPTConfig; imported lazily so collection works without torch
    from genserve.export.families.gpt.model import GPTConfig

    return GPTConfig(vocab_size=384, block_size=96, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


@pytest.fixture(scope="session")
def gpt_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding a tiny GPT trained for 40 steps on 12 pydoc topics."""
    import torch

    from genserve.export.families.gpt.build import build_gpt
    from genserve.export.core.options import RunOptions

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("text-repository")
    build_gpt(root, name=GPT_NAME, config=tiny_gpt_config(), steps=40, batch_size=8,
              run=RunOptions(limit=12, progress=False))
    return root


@pytest.fixture(scope="session")
def gpt_dir(gpt_repo: Path) -> Path:
    return gpt_repo / GPT_NAME / "1"


@pytest.fixture(scope="session")
def text_gateway(gpt_repo: Path, redis_url: str) -> Iterator[GatewayThread]:
    """A gateway and a real `genserve worker` process (threads pool) serving the tiny GPT."""
    from genserve.v1 import inference_pb2

    prefix = f"test-text-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(gpt_repo, redis_url, prefix)
    try:
        with GatewayThread(distributed_settings(gpt_repo, redis_url, prefix)) as running:
            _wait_for_worker(running, inference_pb2.GenerateTextRequest(model=GPT_NAME, max_new_tokens=1, seed=0))
            yield running
    finally:
        worker.stop()


def _wait_for_worker(gateway: GatewayThread, request: object, timeout_s: float = 60) -> None:
    import time

    import grpc

    end = time.monotonic() + timeout_s
    while True:
        try:
            gateway.inference.CompleteText(request, timeout=5)
            return
        except grpc.RpcError as exc:
            if time.monotonic() > end or exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise


@pytest.fixture(scope="session")
def text_embedded(gpt_repo: Path) -> Iterator[GatewayThread]:
    """The embedded mode: no broker; chunks reach the gateway by in-process callback."""
    with GatewayThread(Settings(model_repository=gpt_repo, gateway=GatewaySettings(port=0))) as running:
        yield running
