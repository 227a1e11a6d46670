"""The same model without the service: raw ONNX Runtime in-process (the limit) and PyTorch eager.

Batch-1 calls back to back give the latency floor and the requests/s one core could reach
with no gRPC, no queue and no batching; batch-64 calls give the throughput ceiling.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from genserve.repository import Manifest, ModelRepository
from genserve.settings import WorkerSettings
from genserve.workers.runtime import OnnxModel


def measure(call: Callable[[], Any], duration_s: float, per_call: int) -> dict[str, Any]:
    for _ in range(20):
        call()
    latencies = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    ms = np.array(latencies) * 1e3
    return {"requests": len(ms) * per_call, "errors": 0, "seconds": float(ms.sum() / 1e3),
            "rps": per_call * len(ms) / (ms.sum() / 1e3), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def example_feeds(manifest: Manifest, batch: int) -> dict[str, np.ndarray]:
    if manifest.loop in ("image_to_image", "image_classifier"):
        shape = (batch, manifest.image.channels, manifest.image.height, manifest.image.width)
        return {"image": np.random.default_rng(0).random(shape, dtype=np.float32)}
    feeds = {"z": np.random.default_rng(0).standard_normal((batch, manifest.latent_dim), dtype=np.float32)}
    if manifest.conditional:
        feeds["label"] = np.zeros(batch, dtype=np.int64)
    return feeds


def bench(repository: ModelRepository, manifest: Manifest, provider: str, threads: int, duration_s: float) -> list[dict[str, Any]]:
    model = OnnxModel.load(str(repository.verified_path(manifest)),
                           WorkerSettings(execution_provider=provider, intra_op_threads=threads))
    rows = []
    for batch in (1, 64):
        feeds = example_feeds(manifest, batch)
        rows.append({"system": f"raw ONNX Runtime, batch {batch}", "concurrency": batch,
                     **measure(lambda: model.run(feeds), duration_s / 2, batch)})
    rows += torch_eager(repository, manifest, threads, duration_s)
    return rows


def torch_eager(repository: ModelRepository, manifest: Manifest, threads: int, duration_s: float) -> list[dict[str, Any]]:
    """PyTorch eager on the weights published beside the ONNX file, when torch is installed."""
    try:
        import torch

        from genserve.export.core.publishing import load_published
    except ImportError:
        return []
    torch.set_num_threads(threads)
    module = load_published(repository, manifest)
    rows = []
    for batch in (1, 64):
        feeds = {k: torch.from_numpy(v) for k, v in example_feeds(manifest, batch).items()}

        def call() -> None:
            with torch.inference_mode():
                module(**feeds)

        rows.append({"system": f"PyTorch eager, batch {batch}", "concurrency": batch,
                     **measure(call, duration_s / 2, batch)})
    return rows
