"""Serving loops: how a worker turns requests for one kind of model into ONNX feeds and back.

The manifest names the loop; `HANDLERS[(loop, op)]` is the code that runs it. A new model
family that fits an existing loop changes nothing here.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from genserve import seeds
from genserve.errors import InvalidArgumentError
from genserve.repository import Manifest
from genserve.tensors import from_wire, png_encode, to_wire
from genserve.workers.batching import BatchStats, Feeds, Outcome, run_requests
from genserve.workers.generation import generate_text, score_text
from genserve.workers.runtime import LoadedModel
from genserve.workers.text import classify_texts, softmax, top_k

Handler = Callable[[LoadedModel, list[dict[str, Any]], BatchStats], list[Outcome]]


def sample_latents(seed: int, count: int, latent_dim: int, first_index: int = 0) -> np.ndarray:
    """The seeded draw (genserve/seeds.py): row i is sample first_index + i of `seed`, never
    dependent on batch neighbours, chunk sizes or workers."""
    return seeds.latents(seed, first_index, count, latent_dim)


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
            z = sample_latents(int(request["seed"]), int(request["count"]), dim, int(request.get("first_index") or 0))
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


def image_feeds(manifest: Manifest, request: dict[str, Any]) -> Feeds:
    """The request's images as the graph's `image` input: (n, C, H, W) float32, as in the manifest."""
    spec = manifest.image
    want = (spec.channels, spec.height, spec.width)
    images = from_wire(request["images"], "images")
    if images.ndim == 3 and spec.channels == 1:
        images = images[:, None]
    if images.ndim != 4 or tuple(images.shape[1:]) != want or not np.isfinite(images).all():
        layout = ", ".join(map(str, want))
        raise InvalidArgumentError(f"images must be finite float32 (n, {layout}), got {images.shape}")
    return {"image": images.astype(np.float32, copy=False)}


def denoise(loaded: LoadedModel, requests: list[dict[str, Any]], stats: BatchStats) -> list[Outcome]:
    """image_to_image: `image` -> the graph's one output (the DAE's `denoised`), tensors and/or PNGs."""
    manifest = loaded.manifest
    output = manifest.files["model"].outputs[0].name  # ONNX forbids naming it `image` too

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        return encode_images(out[output], request, manifest.image.low, manifest.image.high)

    def prepare(request: dict[str, Any]) -> Feeds:
        return image_feeds(manifest, request)

    return run_requests(loaded.onnx, requests, prepare, finish, loaded.max_batch_size, stats)


def classify_images(loaded: LoadedModel, requests: list[dict[str, Any]], stats: BatchStats) -> list[Outcome]:
    """image_classifier: images -> the graph's `logits` -> softmax (here, in float64) -> top k.

    The project's graphs stop at logits so that other users of the ONNX file can calibrate or
    combine them; probabilities are made here, per image, so they never depend on the batch.
    A graph whose output is `probs` is taken as already normalised.
    """
    manifest = loaded.manifest
    classes = len(manifest.labels)

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        k = min(max(int(request.get("top_k") or 1), 1), classes)
        probs = out["probs"] if "probs" in out else softmax(out["logits"].astype(np.float64))
        return {"ok": True, "top": top_k(probs, k)}

    def prepare(request: dict[str, Any]) -> Feeds:
        return image_feeds(manifest, request)

    return run_requests(loaded.onnx, requests, prepare, finish, loaded.max_batch_size, stats)


HANDLERS: dict[tuple[str, str], Handler] = {
    ("latent_sampler", "generate_images"): generate_images,
    ("image_to_image", "denoise"): denoise,
    ("image_classifier", "classify"): classify_images,
    ("text_classifier", "classify"): classify_texts,
    ("autoregressive", "generate_text"): generate_text,
    ("autoregressive", "score_text"): score_text,
}
