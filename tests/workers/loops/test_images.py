"""The image serving loops: Denoise (image_to_image) and Classify (image_classifier) in a worker.

The graphs are tiny and built with onnx.helper (no torch) so the expected outputs are known
exactly: the "denoiser" halves its input, the "classifier" is one MatMul from 4 pixels to 3
logits. Both are published into a temporary repository and run through `execute`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from genserve.repository import ImageSpec, Manifest, OnnxFile, ServingHints, TensorSpec, publish
from genserve.tensors import from_wire, png_decode, to_wire
from genserve.workers.tasks import execute
from tests.workers.test_runtime import tiny_cache

WEIGHTS = np.array(  # (4 pixels, 3 classes)
    [[2.0, -1.0, 0.0], [0.0, 1.0, 0.5], [-1.0, 0.0, 3.0], [1.0, 1.0, 1.0]], dtype=np.float32
)
LABELS = ["cat", "dog", "eel"]


def write_graph(path: Path, nodes: list, output: tuple[str, list], initializer: list) -> Path:
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
        initializer=initializer,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def publish_tiny(root: Path, name: str, loop: str, source: Path, output: TensorSpec, labels: list[str]) -> None:
    onnx_file = OnnxFile(path="model.onnx", sha256="", outputs=[output],
                         inputs=[TensorSpec(name="image", shape=[-1, 1, 2, 2], dtype="float32")])
    manifest = Manifest(name=name, version="1", kind="test", loop=loop, files={"model": onnx_file},
                        image=ImageSpec(channels=1, height=2, width=2), labels=labels,
                        serving=ServingHints(max_batch_size=256))
    publish(root, manifest, {"model": source})


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("images") / "repository"
    root.mkdir()
    half = write_graph(root.parent / "half.onnx", [helper.make_node("Mul", ["image", "half"], ["out"])],
                       ("out", ["batch", 1, 2, 2]), [numpy_helper.from_array(np.float32(0.5), "half")])
    publish_tiny(root, "half", "image_to_image", half, TensorSpec(name="out", shape=[-1, 1, 2, 2], dtype="float32"), [])
    classifier = write_graph(
        root.parent / "linear.onnx",
        [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        ("logits", ["batch", 3]),
        [numpy_helper.from_array(WEIGHTS, "w")],
    )
    publish_tiny(root, "linear", "image_classifier", classifier,
                 TensorSpec(name="logits", shape=[-1, 3], dtype="float32"), LABELS)
    return tiny_cache(root)


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 2, 2), dtype=np.float32)


def denoise_request(x: np.ndarray, png: bool = False) -> dict[str, Any]:
    return {"images": to_wire(x), "tensor": True, "png": png}


def run(cache: Any, model: str, op: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
    return execute({"model": model, "op": op, "requests": requests}, cache)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_denoise_returns_each_requests_own_images_from_one_call(cache: Any) -> None:
    """Three requests of 1, 4 and 2 images run as one ONNX call and get their own outputs back."""
    inputs = [images(n, seed) for seed, n in enumerate((1, 4, 2))]
    result = run(cache, "half", "denoise", [denoise_request(x) for x in inputs])
    assert result["calls"] == [7]
    for x, outcome in zip(inputs, result["results"]):
        assert outcome["ok"] is True
        np.testing.assert_array_equal(from_wire(outcome["images"]), x * np.float32(0.5))


def test_denoise_returns_pngs_when_asked(cache: Any) -> None:
    """PNG output decodes to the 8-bit rounding of the output images."""
    x = images(3, 7)
    (outcome,) = run(cache, "half", "denoise", [denoise_request(x, png=True)])["results"]
    assert len(outcome["png"]) == 3
    for png, want in zip(outcome["png"], x * 0.5):
        np.testing.assert_allclose(png_decode(png, 1, "png"), want, atol=1 / 255)


def test_denoise_is_batch_invariant(cache: Any) -> None:
    """A request gives the same bytes alone as stacked between others."""
    x = images(2, 3)
    alone = run(cache, "half", "denoise", [denoise_request(x)])["results"][0]["images"]["data"]
    crowd = [denoise_request(images(5, s)) for s in range(10, 14)]
    crowd.insert(2, denoise_request(x))
    assert run(cache, "half", "denoise", crowd)["results"][2]["images"]["data"] == alone


def test_an_image_request_that_breaks_the_graph_fails_alone(cache: Any) -> None:
    """Images of the wrong shape fail INTERNAL (the gateway refuses them, below); the requests
    beside them are served from calls of their own."""
    requests = [denoise_request(images(1, 0)[:, :, :1]), denoise_request(images(2, 1)), denoise_request(images(1, 2))]
    result = run(cache, "half", "denoise", requests)
    bad, good, other = result["results"]
    assert bad["code"] == "INTERNAL" and bad["message"].startswith("worker error: ")
    np.testing.assert_array_equal(from_wire(good["images"]), images(2, 1) * np.float32(0.5))
    np.testing.assert_array_equal(from_wire(other["images"]), images(1, 2) * np.float32(0.5))
    assert result["calls"] == [2, 1]


@pytest.mark.parametrize("rpc", ["denoise", "classify_images"])
def test_the_gateway_refuses_bad_images_before_the_worker_sees_them(cache: Any, rpc: str) -> None:
    """Wrong shape or NaN pixels are INVALID_ARGUMENT at the gateway, with what is allowed; a
    request that passed runs through the worker as validated (3-D images gain their channel)."""
    from genserve.errors import InvalidArgumentError
    from genserve.services import validation
    from genserve.settings import LimitSettings
    from genserve.tensors import to_proto
    from genserve.v1 import inference_pb2

    model = "half" if rpc == "denoise" else "linear"
    message = inference_pb2.DenoiseRequest if rpc == "denoise" else inference_pb2.ClassifyRequest
    manifest = cache.get(model).manifest
    validate = getattr(validation, rpc)
    nan = images(1, 0)
    nan[0, 0, 1, 1] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"images must have shape \(n, 1, 2, 2\), got \(1, 1, 2, 1\)"):
        validate(message(model=model, images=to_proto(images(1, 0)[:, :, :, :1])), manifest, LimitSettings())
    with pytest.raises(InvalidArgumentError, match="images must be finite"):
        validate(message(model=model, images=to_proto(nan)), manifest, LimitSettings())
    x = images(3, 4)
    task = validate(message(model=model, images=to_proto(x[:, 0])), manifest, LimitSettings()).to_task()
    (outcome,) = run(cache, model, "denoise" if rpc == "denoise" else "classify", [task])["results"]
    if rpc == "denoise":
        np.testing.assert_array_equal(from_wire(outcome["images"]), x * np.float32(0.5))
    else:
        assert len(outcome["top"]) == 3 and all(len(row) == 1 for row in outcome["top"])


def test_classify_returns_the_top_k_probabilities_best_first(cache: Any) -> None:
    """Per image, [label index, softmax probability] pairs in decreasing order, k of them."""
    x = images(5, 2)
    (outcome,) = run(cache, "linear", "classify", [{"images": to_wire(x), "top_k": 2}])["results"]
    probs = softmax(x.reshape(5, 4).astype(np.float64) @ WEIGHTS.astype(np.float64))
    assert len(outcome["top"]) == 5
    for row, p in zip(outcome["top"], probs):
        best = np.argsort(-p)[:2]
        assert [index for index, _ in row] == best.tolist()
        np.testing.assert_allclose([score for _, score in row], p[best], rtol=1e-5)


def test_classify_stacks_requests_and_bounds_top_k(cache: Any) -> None:
    """Requests share one call; top_k above the label count gives every label, 0 gives one."""
    requests = [{"images": to_wire(images(3, 4)), "top_k": 9}, {"images": to_wire(images(1, 5)), "top_k": 0}]
    result = run(cache, "linear", "classify", requests)
    assert result["calls"] == [4]
    many, one = result["results"]
    assert [len(row) for row in many["top"]] == [3, 3, 3] and len(one["top"][0]) == 1
    assert all(sum(score for _, score in row) == pytest.approx(1.0) for row in many["top"])


def test_an_image_model_refuses_another_loops_op(cache: Any) -> None:
    """Asking a classifier to denoise (not in protocol.LOOPS for its loop) answers INVALID_ARGUMENT for each request."""
    result = run(cache, "linear", "denoise", [denoise_request(images(1, 0))] * 2)
    assert [r["code"] for r in result["results"]] == ["INVALID_ARGUMENT"] * 2
    assert "does not serve denoise" in result["results"][0]["message"]
