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


def test_a_lone_request_skips_the_batcher_and_concurrent_ones_still_group(repo: Path, monkeypatch):
    """Embedded: a request alone (nothing queued or in flight, no other RPC ready) runs right
    in the dispatcher; eight at once still go through the batcher and share messages; a
    seeded request answers the same bytes either way."""
    from genserve.protocol import Op
    from genserve.services.batcher import Batcher
    from genserve.services.dispatch import Dispatcher

    manifest = ModelRepository(repo).resolve("vae")
    dispatcher = Dispatcher(Settings(model_repository=repo))
    queued: list[int] = []
    submit = Batcher.submit

    def counting(self, request, samples, deadline):
        queued.append(samples)
        return submit(self, request, samples, deadline)

    monkeypatch.setattr(Batcher, "submit", counting)

    def request(seed: int) -> dict:
        return {"seed": seed, "count": 1, "first_index": 0, "tensor": True, "png": False}

    async def scenario() -> tuple[list, list]:
        await dispatcher.submit(manifest, Op.GENERATE_IMAGES, request(0), 1, 30)  # loads the model (a thread)
        queued.clear()
        alone = [await dispatcher.submit(manifest, Op.GENERATE_IMAGES, request(s), 1, 30) for s in range(8)]
        assert queued == [], "a lone request went through the batcher"
        together = await asyncio.gather(*(dispatcher.submit(manifest, Op.GENERATE_IMAGES, request(s), 1, 30)
                                          for s in range(8)))
        await dispatcher.close()
        return alone, together

    alone, together = asyncio.run(scenario())
    assert len(queued) >= 7, queued  # at most the first of the eight ran alone
    (stats,) = dispatcher.stats(manifest.ref)
    assert max(stats.requests_per_batch) > 1 and stats.requests_per_batch[1] >= 8, stats.requests_per_batch
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(from_wire(a["images"]), from_wire(b["images"]))
