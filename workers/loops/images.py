"""The image serving loops: latent_sampler (z -> image), image_to_image, image_classifier.

Each handler prepares every request's feeds on its own, lets `batching.run_requests` stack
them into ONNX Runtime calls, and turns each request's slice of the outputs into its outcome.
Requests arrive validated by the gateway (shapes, finiteness, labels: services.validation);
a request that still breaks the model fails alone, INTERNAL.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genserve.protocol import Outcome
from genserve import seeds
from genserve.tensors import from_wire, png_encode, to_wire
from genserve.workers.batching import CallLog, Feeds, run_requests
from genserve.workers.loops.labels import softmax, top_k
from genserve.workers.runtime import LoadedModel


def sample_latents(seed: int, count: int, latent_dim: int, first_index: int = 0) -> np.ndarray:
    """The seeded draw (genserve/seeds.py): row i is sample first_index + i of `seed`, never
    dependent on batch neighbours, chunk sizes or workers."""
    return seeds.latents(seed, first_index, count, latent_dim)


def encode_images(images: np.ndarray, request: dict[str, Any], low: float, high: float) -> Outcome:
    outcome: Outcome = {"ok": True}
    if request.get("array"):  # an in-process caller (a job chunk): the array itself, no bytes copy
        outcome["array"] = images
    elif request.get("tensor", True):
        outcome["images"] = to_wire(images)
    if request.get("png", False):
        outcome["png"] = [png_encode(image, low, high) for image in images]
    return outcome


def generate_images(loaded: LoadedModel, requests: list[dict[str, Any]], calls: CallLog) -> list[Outcome]:
    """latent_sampler: z ~ N(0, I) from the request's seed (or the client's latents) -> decoder."""
    manifest = loaded.manifest

    def prepare(request: dict[str, Any]) -> Feeds:
        if request.get("latents") is not None:
            z = from_wire(request["latents"], "latents").astype(np.float32)
        else:
            z = sample_latents(int(request["seed"]), int(request["count"]), manifest.latent_dim,
                               int(request.get("first_index") or 0))
        feeds = {"z": z}
        if manifest.conditional:
            feeds["label"] = np.full(len(z), request["label"], dtype=np.int64)
        return feeds

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        image = manifest.image
        outcome = encode_images(out["image"], request, image.low, image.high)
        if request.get("return_latents"):
            outcome["latents"] = to_wire(feeds["z"])
        return outcome

    return run_requests(loaded.onnx, requests, prepare, finish, loaded.max_batch_size, calls)


def image_feeds(request: dict[str, Any]) -> Feeds:
    """The request's images as the graph's `image` input: (n, C, H, W) float32, as validated."""
    return {"image": from_wire(request["images"], "images")}


def denoise(loaded: LoadedModel, requests: list[dict[str, Any]], calls: CallLog) -> list[Outcome]:
    """image_to_image: `image` -> the graph's one output (the DAE's `denoised`), tensors and/or PNGs."""
    manifest = loaded.manifest
    output = manifest.files["model"].outputs[0].name  # ONNX forbids naming it `image` too

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        return encode_images(out[output], request, manifest.image.low, manifest.image.high)

    return run_requests(loaded.onnx, requests, image_feeds, finish, loaded.max_batch_size, calls)


def classify_images(loaded: LoadedModel, requests: list[dict[str, Any]], calls: CallLog) -> list[Outcome]:
    """image_classifier: images -> the graph's `logits` -> softmax (here, in float64) -> top k.

    The project's graphs stop at logits so that other users of the ONNX file can calibrate or
    combine them; probabilities are made here, per image, so they never depend on the batch.
    A graph whose output is `probs` is taken as already normalised.
    """
    classes = len(loaded.manifest.labels)

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        k = min(max(int(request.get("top_k") or 1), 1), classes)
        probs = out["probs"] if "probs" in out else softmax(out["logits"].astype(np.float64))
        return {"ok": True, "top": top_k(probs, k)}

    return run_requests(loaded.onnx, requests, image_feeds, finish, loaded.max_batch_size, calls)
