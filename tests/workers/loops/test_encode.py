"""EncodeImages in a worker: the VAE's encoder and bare decoder graphs, batched across requests.

The tiny VAEs of the session repository (tests/conftest.py: build_vae, one epoch) are run
through `execute` as a worker runs a task message; expected values come from ONNX Runtime
sessions of the published graphs opened here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from genserve.repository import ModelRepository
from genserve.tensors import from_wire, png_decode, to_wire
from genserve.workers.tasks import execute
from tests.workers.test_runtime import tiny_cache


@pytest.fixture(scope="module")
def cache(repo: Path) -> Any:
    return tiny_cache(repo)


def session(repo: Path, ref: str, role: str) -> ort.InferenceSession:
    repository = ModelRepository(repo)
    return ort.InferenceSession(str(repository.verified_path(repository.resolve(ref), role)),
                                providers=["CPUExecutionProvider"])


def digits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def encode(cache: Any, model: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
    return execute({"model": model, "op": "encode_images", "requests": requests}, cache)


def request(x: np.ndarray, reconstruct: bool = True, **fields: Any) -> dict[str, Any]:
    return {"images": to_wire(x), "reconstruct": reconstruct, "tensor": True, "png": False, **fields}


def test_outcome_is_the_posterior_and_its_decoded_mean(cache, repo) -> None:
    """mean/logvar are the encoder graph's; the reconstruction is the bare decoder's image of the mean."""
    x = digits(5, 0)
    (outcome,) = encode(cache, "vae:1", [request(x)])["results"]
    mu, logvar = session(repo, "vae:1", "encoder").run(["mu", "logvar"], {"image": x})
    np.testing.assert_allclose(from_wire(outcome["mean"]), mu, atol=1e-6)
    np.testing.assert_allclose(from_wire(outcome["logvar"]), logvar, atol=1e-6)
    (image,) = session(repo, "vae:1", "decoder").run(["image"], {"latent": mu})
    np.testing.assert_allclose(from_wire(outcome["images"]), image, atol=1e-6)


def test_a_message_of_requests_is_stacked_and_split_back(cache) -> None:
    """Three requests run as one encoder call and one decoder call (of those reconstructing);
    each gets what it would get alone, within float tolerance."""
    parts = [digits(n, seed) for n, seed in ((3, 1), (1, 2), (4, 3))]
    requests = [request(parts[0]), request(parts[1], reconstruct=False), request(parts[2])]
    together = encode(cache, "vae:1", requests)
    assert together["calls"] == [8, 7]  # 8 images encoded together, the 7 reconstructing decoded together
    for req, got in zip(requests, together["results"]):
        (alone,) = encode(cache, "vae:1", [req])["results"]
        assert got["ok"] and set(got) == set(alone)
        for key in ("mean", "logvar", "images"):
            if key in alone:
                np.testing.assert_allclose(from_wire(got[key]), from_wire(alone[key]), atol=1e-5)
    assert "images" not in together["results"][1]


def test_conditional_model_reads_each_images_label(cache, repo) -> None:
    """cvae's encoder and decoder take the label; a different label moves the posterior."""
    x = digits(2, 4)
    (outcome,) = encode(cache, "cvae:1", [request(x, labels=[3, 8])])["results"]
    label = np.array([3, 8], np.int64)
    mu, _ = session(repo, "cvae:1", "encoder").run(["mu", "logvar"], {"image": x, "label": label})
    np.testing.assert_allclose(from_wire(outcome["mean"]), mu, atol=1e-6)
    (other,) = encode(cache, "cvae:1", [request(x, labels=[0, 0])])["results"]
    assert not np.allclose(from_wire(other["mean"]), mu)


def test_pngs_only_and_a_bad_request_fails_alone(cache) -> None:
    """PNG reconstructions without the tensor; a request that breaks the graph fails alone."""
    x = digits(2, 5)
    good = {**request(x), "tensor": False, "png": True}
    bad = request(np.zeros((1, 1, 5, 5), np.float32))
    ok, failed = encode(cache, "vae:1", [good, bad])["results"]
    assert ok["ok"] and "images" not in ok and len(ok["png"]) == 2
    assert png_decode(ok["png"][0], 1, "png").shape == (1, 28, 28)
    assert failed == {"ok": False, "code": "INTERNAL", "message": failed["message"]}
