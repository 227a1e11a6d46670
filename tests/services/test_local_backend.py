"""The embedded backend: small one-shot batches of a loaded model run on the event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np

from genserve.repository import ModelRepository
from genserve.services.backends.local import LocalBackend
from genserve.settings import Settings, WorkerSettings
from genserve.tensors import from_wire


def test_where_batches_run_and_that_both_ways_answer_the_same(repo: Path, monkeypatch):
    ref = ModelRepository(repo).resolve("vae").ref
    backend = LocalBackend(Settings(model_repository=repo, worker=WorkerSettings(inline_samples=4)))
    from genserve.workers import tasks

    ran_in: list[str] = []
    execute = tasks.execute

    def recording(payload, cache):
        ran_in.append(threading.current_thread().name)
        return execute(payload, cache)

    monkeypatch.setattr(tasks, "execute", recording)
    request = {"seed": 7, "count": 2, "tensor": True}

    async def scenario() -> list[np.ndarray]:
        images = []
        for samples in (2, 2, 5):  # first: the session is created on a thread; then inline; then too big
            result = await backend.run(ref, "q", "generate_images", [request], 0.0, samples)
            images.append(from_wire(result["results"][0]["images"]))
        assert not backend.inline(ref, "generate_text", 1) and not backend.inline(ref, "score_text", 1)
        assert not backend.inline(ref, "generate_images", 0)  # samples unknown: the thread pool
        await backend.close()
        return images

    images = asyncio.run(scenario())
    assert [name.startswith("genserve-worker") for name in ran_in] == [True, False, True]
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[1], images[2])
