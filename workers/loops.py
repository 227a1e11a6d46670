"""Serving loops: how a worker turns requests for one kind of model into ONNX feeds and back.

The manifest names the loop; `HANDLERS[(loop, op)]` is the code that runs it. A new model
family that fits an existing loop changes nothing here.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from genserve.errors import InvalidArgumentError
from genserve.tensors import from_wire, png_encode, to_wire
from genserve.workers.batching import BatchStats, Feeds, Outcome, run_requests
from genserve.workers.runtime import LoadedModel

Handler = Callable[[LoadedModel, list[dict[str, Any]], BatchStats], list[Outcome]]


def sample_latents(seed: int, count: int, latent_dim: int) -> np.ndarray:
    """The seeded draw: row i depends only on (seed, i), never on batch neighbours."""
    return np.random.default_rng(seed).standard_normal((count, latent_dim), dtype=np.float32)


def encode_images(images: np.ndarray, request: dict[str, Any], low: float, high: float) -> Outcome:
    outcome: Outcome = {"ok": True}
    if request.get("tensor", True):
        outcome["images"] = to_wire(images)
    if request.get("png", False):
        outcome["png"] = [png_encode(image, low, high) for image in images]
    return outcome


def generate_images(loaded: LoadedModel, requests: list[dict[str, Any]], stats: BatchStats) -> list[Outcome]:
    """latent_sampler: z ~ N(0, I) from the request's seed (or the client's latents) -> decoder."""
    manifest = loaded.manifest
    dim = manifest.latent_dim

    def prepare(request: dict[str, Any]) -> Feeds:
        if request.get("latents") is not None:
            z = from_wire(request["latents"], "latents").astype(np.float32)
            if z.ndim != 2 or z.shape[1] != dim or not np.isfinite(z).all():
                raise InvalidArgumentError(f"latents must be finite float32 (n, {dim}), got {z.shape}")
        else:
            z = sample_latents(int(request["seed"]), int(request["count"]), dim)
        feeds = {"z": z}
        if manifest.conditional:
            label = request.get("label")
            if label is None or not 0 <= label < len(manifest.labels):
                raise InvalidArgumentError(f"label must be 0..{len(manifest.labels) - 1}, got {label}")
            feeds["label"] = np.full(len(z), label, dtype=np.int64)
        return feeds

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        image = manifest.image
        outcome = encode_images(out["image"], request, image.low, image.high)
        if request.get("return_latents"):
            outcome["latents"] = to_wire(feeds["z"])
        return outcome

    return run_requests(loaded.onnx, requests, prepare, finish, loaded.max_batch_size, stats)


HANDLERS: dict[tuple[str, str], Handler] = {
    ("latent_sampler", "generate_images"): generate_images,
}
