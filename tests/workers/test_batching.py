"""Worker-side batching: stacking requests into ONNX Runtime calls, splitting, failing alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genserve.errors import InvalidArgumentError
from genserve.tensors import from_wire, png_decode, to_wire
from genserve.workers.batching import CallLog, Feeds, failure, run_requests, run_stacked
from genserve.workers.loops.images import generate_images, sample_latents
from genserve.workers.runtime import LoadedModel
from genserve.workers.tasks import execute
from tests.workers.test_runtime import decode_reference, tiny_cache, tiny_repository


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_repository(tmp_path_factory.mktemp("batching") / "repository")


@pytest.fixture(scope="module")
def loaded(repo: Path) -> LoadedModel:
    return tiny_cache(repo).get("vae:1")


def latents(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 4), dtype=np.float32)


def seeded(seed: int, count: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "count": count,
        "seed": seed,
        "label": None,
        "latents": None,
        "tensor": True,
        "png": False,
        "return_latents": False,
        **fields,
    }


def images_of(outcome: dict[str, Any]) -> np.ndarray:
    assert outcome["ok"] is True, outcome
    return from_wire(outcome["images"])


def test_run_stacked_splits_outputs_back_per_request(loaded: LoadedModel) -> None:
    """Three requests of 3, 5 and 2 rows get back exactly their own rows, in one call."""
    feeds = [{"z": latents(n, seed)} for seed, n in enumerate((3, 5, 2))]
    call_log = CallLog()
    outputs = run_stacked(loaded.onnx, feeds, max_batch=256, calls=call_log)
    assert call_log.rows == [10]
    assert [o["image"].shape for o in outputs] == [(3, 1, 2, 2), (5, 1, 2, 2), (2, 1, 2, 2)]
    for feed, out in zip(feeds, outputs):
        np.testing.assert_allclose(out["image"], decode_reference(feed["z"]), atol=1e-5)


@pytest.mark.parametrize(
    "max_batch, calls", [(4, [4, 4, 2]), (5, [5, 5]), (10, [10]), (1, [1] * 10)]
)
def test_run_stacked_chunks_at_max_batch(
    loaded: LoadedModel, max_batch: int, calls: list[int]
) -> None:
    """10 stacked rows run in calls of at most max_batch rows; each request gets its own rows."""
    feeds = [{"z": latents(n, seed)} for seed, n in enumerate((3, 5, 2))]
    call_log = CallLog()
    outputs = run_stacked(loaded.onnx, feeds, max_batch=max_batch, calls=call_log)
    assert call_log.rows == calls
    for feed, out in zip(feeds, outputs):
        np.testing.assert_allclose(out["image"], decode_reference(feed["z"]), atol=1e-5)


def test_sampled_latents_depend_only_on_seed_and_row() -> None:
    """A seeded draw of 3 rows is the prefix of the same seed's draw of 8 rows; seeds differ."""
    np.testing.assert_array_equal(sample_latents(5, 3, 4), sample_latents(5, 8, 4)[:3])
    assert sample_latents(5, 3, 4).dtype == np.float32
    assert not np.array_equal(sample_latents(5, 3, 4), sample_latents(6, 3, 4))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("max_batch", [256, 50])
def test_seeded_request_is_batch_invariant(repo: Path, threads: int, max_batch: int) -> None:
    """A seeded request gives the same bytes alone as inside a batch of 64, even across calls."""
    loaded = tiny_cache(repo, threads=threads, max_batch_size=max_batch).get("vae:1")
    target = seeded(42, count=3)
    alone = generate_images(loaded, [target], CallLog())[0]
    batch = [seeded(1000 + i, count=3) for i in range(63)]
    batch.insert(16, target)  # rows 48..50: with max_batch 50 they straddle two calls
    call_log = CallLog()
    outcomes = generate_images(loaded, batch, call_log)
    assert sum(call_log.rows) == 64 * 3 and max(call_log.rows) <= max_batch
    assert outcomes[16]["images"]["data"] == alone["images"]["data"]
    assert images_of(outcomes[16]).shape == (3, 1, 2, 2)
    np.testing.assert_allclose(
        images_of(alone), decode_reference(sample_latents(42, 3, 4)), atol=1e-5
    )


def test_client_latents_are_decoded_and_returned(loaded: LoadedModel) -> None:
    """Explicit latents replace the seeded draw; return_latents echoes them; PNGs come per image."""
    z = latents(2, seed=9)
    request = seeded(0, latents=to_wire(z), return_latents=True, png=True)
    [outcome] = generate_images(loaded, [request], CallLog())
    np.testing.assert_allclose(images_of(outcome), decode_reference(z), atol=1e-5)
    np.testing.assert_array_equal(from_wire(outcome["latents"]), z)
    assert len(outcome["png"]) == 2
    np.testing.assert_allclose(
        png_decode(outcome["png"][1], 1), decode_reference(z)[1], atol=1 / 255
    )


def test_png_only_request_carries_no_tensor(loaded: LoadedModel) -> None:
    """tensor=False, png=True returns PNGs and no images tensor."""
    [outcome] = generate_images(loaded, [seeded(1, count=3, tensor=False, png=True)], CallLog())
    assert outcome["ok"] is True and "images" not in outcome and len(outcome["png"]) == 3


@pytest.mark.parametrize(
    "bad, code, calls",
    [
        # the gateway refuses these shapes and non-finite values (tests/services/test_validation.py);
        # one that reaches the worker anyway breaks the stacked call, then fails alone
        (to_wire(np.zeros((2, 3), dtype=np.float32)), "INTERNAL", [2, 3]),
        # a malformed wire tensor fails while its feeds are prepared: it never reaches ONNX Runtime
        ({"shape": [2, 4], "dtype": "float32", "data": b"\0" * 5}, "INVALID_ARGUMENT", [5]),
    ],
)
def test_request_that_breaks_the_model_fails_alone(
    loaded: LoadedModel, bad: dict[str, Any], code: str, calls: list[int]
) -> None:
    """One request with unusable latents fails; its neighbours get their images."""
    requests = [seeded(1, count=2), seeded(2, latents=bad), seeded(3, count=3)]
    call_log = CallLog()
    outcomes = generate_images(loaded, requests, call_log)
    assert outcomes[1]["ok"] is False and outcomes[1]["code"] == code
    assert call_log.rows == calls
    np.testing.assert_allclose(
        images_of(outcomes[0]), decode_reference(sample_latents(1, 2, 4)), atol=1e-5
    )
    np.testing.assert_allclose(
        images_of(outcomes[2]), decode_reference(sample_latents(3, 3, 4)), atol=1e-5
    )


def test_failed_stacked_call_falls_back_to_one_call_per_request(loaded: LoadedModel) -> None:
    """If the stacked call fails (a float64 feed), requests run alone and only the bad one fails."""
    feeds = {0: latents(2, 0), 1: latents(1, 1).astype(np.float64), 2: latents(3, 2)}

    def prepare(request: dict[str, Any]) -> Feeds:
        return {"z": feeds[request["id"]]}

    def finish(request: dict[str, Any], _: Feeds, out: Feeds) -> dict[str, Any]:
        return {"ok": True, "image": out["image"]}

    call_log = CallLog()
    outcomes = run_requests(loaded.onnx, [{"id": i} for i in range(3)], prepare, finish, 256, call_log)
    assert outcomes[1]["ok"] is False and outcomes[1]["code"] == "INTERNAL"
    assert outcomes[1]["message"].startswith("worker error: ")
    for i in (0, 2):
        np.testing.assert_allclose(outcomes[i]["image"], decode_reference(feeds[i]), atol=1e-5)
    assert call_log.rows == [2, 3]  # only calls that ran: the failed stacked call and request 1 are not counted


def test_failure_in_finish_fails_only_that_request(loaded: LoadedModel) -> None:
    """An exception while encoding one request's output fails that request alone."""

    def finish(request: dict[str, Any], _: Feeds, out: Feeds) -> dict[str, Any]:
        if request["id"] == 1:
            raise InvalidArgumentError("cannot encode request 1")
        return {"ok": True, "rows": len(out["image"])}

    outcomes = run_requests(
        loaded.onnx,
        [{"id": i} for i in range(3)],
        lambda r: {"z": latents(2, r["id"])},
        finish,
        256,
        CallLog(),
    )
    assert outcomes == [
        {"ok": True, "rows": 2},
        {"ok": False, "code": "INVALID_ARGUMENT", "message": "cannot encode request 1"},
        {"ok": True, "rows": 2},
    ]


def test_all_requests_bad_makes_no_onnx_call(loaded: LoadedModel) -> None:
    """When every request fails to prepare, each gets its failure and ONNX Runtime is not called."""

    def prepare(request: dict[str, Any]) -> Feeds:
        raise InvalidArgumentError(f"bad {request['id']}")

    call_log = CallLog()
    outcomes = run_requests(loaded.onnx, [{"id": 0}, {"id": 1}], prepare, lambda *a: {}, 256, call_log)
    assert [o["message"] for o in outcomes] == ["bad 0", "bad 1"] and call_log.rows == []


def test_failure_keeps_genserve_codes_and_hides_other_details() -> None:
    """A GenserveError keeps code and message; anything else is INTERNAL with the type name only."""
    assert failure(InvalidArgumentError("count must be 1..4, got 9")) == {
        "ok": False,
        "code": "INVALID_ARGUMENT",
        "message": "count must be 1..4, got 9",
    }
    assert failure(KeyError("/secret/path")) == {
        "ok": False,
        "code": "INTERNAL",
        "message": "worker error: KeyError",
    }


def test_execute_reports_one_outcome_per_request_in_order(repo: Path) -> None:
    """execute keeps request order and isolates a bad request inside a message."""
    requests = [
        seeded(5, count=1),
        seeded(6, latents=to_wire(np.zeros((1, 7), dtype=np.float32))),
        seeded(7),
    ]
    result = execute(
        {"model": "vae:1", "op": "generate_images", "requests": requests}, tiny_cache(repo)
    )
    assert [r.get("code") for r in result["results"]] == [None, "INTERNAL", None]
    assert result["calls"] == [1, 1]  # the stacked call failed; the good requests ran alone
    np.testing.assert_allclose(
        images_of(result["results"][2]), decode_reference(sample_latents(7, 1, 4)), atol=1e-5
    )
