"""The image serving loops: latent_sampler (z -> image, and a VAE's image -> latent), image_to_image,
image_classifier.

Each handler prepares every request's feeds on its own, lets `batching.run_requests` stack
them into ONNX Runtime calls, and turns each request's slice of the outputs into its outcome.
Requests arrive validated by the gateway (shapes, finiteness, labels: services.validation);
a request that still breaks the model fails alone, INTERNAL.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genserve.errors import FailedPreconditionError
from genserve.protocol import RECONSTRUCTION_GRAPH, Outcome, failed
from genserve import seeds
from genserve.tensors import from_wire, png_encode, to_wire
from genserve.workers.batching import CallLog, Feeds, run_requests
from genserve.workers.loops.labels import softmax, top_k
from genserve.workers.runtime import LoadedModel


def sample_latents(seed: int, count: int, latent_dim: int, first_index: int = 0) -> np.ndarray:
    """The seeded draw (genserve/seeds.py): row i is sample first_index + i of `seed`, never
    dependent on batch neighbours, chunk sizes or workers."""
    return seeds.latents(seed, first_index, count, latent_dim)


def image_outcome(images: np.ndarray, request: dict[str, Any], low: float, high: float) -> Outcome:
    """Images as the request asked for them: the array (in-process callers), a tensor, PNGs."""
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
        outcome = image_outcome(out["image"], request, image.low, image.high)
        if request.get("return_latents"):
            outcome["latents"] = to_wire(feeds["z"])
        return outcome

    return run_requests(loaded.onnx, requests, prepare, finish, loaded.max_batch_size, calls)


def image_feeds(request: dict[str, Any]) -> Feeds:
    """The request's images as the graph's `image` input: (n, C, H, W) float32, as validated."""
    return {"image": from_wire(request["images"], "images")}


def encode_images(loaded: LoadedModel, requests: list[dict[str, Any]], calls: CallLog) -> list[Outcome]:
    """latent_sampler with an encoder graph (VAEs): images [, labels] -> the posterior's mean and
    log-variance; with `reconstruct`, the bare decoder's image of each mean, batched as well.

    Two stages, each stacked across the message's requests: every request is encoded, then
    those that asked for reconstructions are decoded together from their means (decode(encode(x))
    in the VAE's own latent space, never through the serving graph's mixture prior).
    """
    manifest = loaded.manifest
    encoder = loaded.graph("encoder")
    # created with the encoder, so the embedded mode's first reconstruction is not a session start
    decoder = loaded.graph(RECONSTRUCTION_GRAPH) if RECONSTRUCTION_GRAPH in manifest.files else None
    means: dict[int, Feeds] = {}  # id(request) -> the decoder's feeds: its means [, labels]

    def prepare(request: dict[str, Any]) -> Feeds:
        feeds = image_feeds(request)
        if manifest.conditional:
            feeds["label"] = np.asarray(request["labels"], dtype=np.int64)  # one per image, as validated
        return feeds

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        means[id(request)] = {"latent": out["mu"], **({"label": feeds["label"]} if "label" in feeds else {})}
        return {"ok": True, "mean": to_wire(out["mu"]), "logvar": to_wire(out["logvar"])}

    outcomes = run_requests(encoder, requests, prepare, finish, loaded.max_batch_size, calls)
    wanted = [i for i, request in enumerate(requests) if request.get("reconstruct") and outcomes[i]["ok"]]
    if wanted and decoder is None:  # the gateway refuses these; a message sent around it fails alone
        for i in wanted:
            outcomes[i] = failed(FailedPreconditionError.code, f"{manifest.ref} has no {RECONSTRUCTION_GRAPH!r} graph")
    elif wanted:
        def finish_decoded(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
            return image_outcome(out["image"], request, manifest.image.low, manifest.image.high)

        decoded = run_requests(decoder, [requests[i] for i in wanted], lambda r: means[id(r)], finish_decoded,
                               loaded.max_batch_size, calls)
        for i, outcome in zip(wanted, decoded):
            outcomes[i] = {**outcomes[i], **outcome} if outcome["ok"] else outcome
    return outcomes


def denoise(loaded: LoadedModel, requests: list[dict[str, Any]], calls: CallLog) -> list[Outcome]:
    """image_to_image: `image` -> the graph's one output (the DAE's `denoised`), tensors and/or PNGs."""
    manifest = loaded.manifest
    output = manifest.files["model"].outputs[0].name  # ONNX forbids naming it `image` too

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        return image_outcome(out[output], request, manifest.image.low, manifest.image.high)

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
