"""The Open Inference Protocol (KServe v2) with genserve's own generated stubs: values, metadata
and every INVALID_ARGUMENT / NOT_FOUND the validation gives, on the embedded gateway (the
worker's code in-process, through the same dispatcher and batcher)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from genserve.oip import grpc_predict_v2_pb2 as v2
from genserve.oip import grpc_predict_v2_pb2_grpc as v2_grpc
from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.workers.runtime import OnnxModel

Z = np.random.default_rng(3).standard_normal((3, 4), dtype=np.float32)


@pytest.fixture(scope="module")
def stub(embedded) -> v2_grpc.GRPCInferenceServiceStub:
    return v2_grpc.GRPCInferenceServiceStub(embedded.channel)


def reference(repo, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The published graph run here, with the worker's session settings."""
    repository = ModelRepository(repo)
    path = repository.verified_path(repository.resolve(model))
    return OnnxModel.load(str(path), WorkerSettings(intra_op_threads=1)).run(feeds)


def raw_request(model: str = "vae", z: np.ndarray = Z, **overrides: object) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model, id="r-1")
    request.inputs.add(name="z", datatype="FP32", shape=z.shape)
    request.raw_input_contents.append(z.tobytes())
    for key, value in overrides.items():
        setattr(request, key, value)
    return request


def test_raw_inputs_give_raw_outputs_equal_to_onnx_runtime(stub, repo):
    """Raw z in -> raw `image` out, the bytes ONNX Runtime gives in process; id and model echoed."""
    response = stub.ModelInfer(raw_request(), timeout=30)
    assert (response.model_name, response.model_version, response.id) == ("vae", "1", "r-1")
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("image", "FP32", [3, 1, 28, 28])
    assert not output.contents.fp32_contents
    image = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(3, 1, 28, 28)
    np.testing.assert_array_equal(image, reference(repo, "vae", {"z": Z})["image"])


def test_typed_contents_give_typed_outputs_for_a_conditional_model(stub, repo):
    """FP32 z and INT64 label as typed contents -> typed fp32_contents, equal to ONNX Runtime."""
    label = np.array([0, 7, 9], dtype=np.int64)
    request = v2.ModelInferRequest(model_name="cvae", model_version="1")
    request.inputs.add(name="z", datatype="FP32", shape=Z.shape).contents.fp32_contents.extend(Z.ravel().tolist())
    request.inputs.add(name="label", datatype="INT64", shape=[3]).contents.int64_contents.extend(label.tolist())
    request.outputs.add(name="image")
    response = stub.ModelInfer(request, timeout=30)
    assert not response.raw_output_contents
    image = np.array(response.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(3, 1, 28, 28)
    np.testing.assert_array_equal(image, reference(repo, "cvae", {"z": Z, "label": label})["image"])


def test_server_and_model_metadata(stub):
    """Live, ready, server metadata, the graph's signature as v2 tensors, model readiness."""
    assert stub.ServerLive(v2.ServerLiveRequest()).live
    assert stub.ServerReady(v2.ServerReadyRequest()).ready
    assert stub.ServerMetadata(v2.ServerMetadataRequest()).name == "genserve"
    meta = stub.ModelMetadata(v2.ModelMetadataRequest(name="cvae"))
    assert (meta.name, list(meta.versions), meta.platform) == ("cvae", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("z", "FP32", [-1, 4]), ("label", "INT64", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("image", "FP32", [-1, 1, 28, 28])]
    assert stub.ModelReady(v2.ModelReadyRequest(name="vae", version="1")).ready


def _nan() -> v2.ModelInferRequest:
    z = Z.copy()
    z[1, 2] = np.nan
    return raw_request(z=z)


def _with(request: v2.ModelInferRequest, edit) -> v2.ModelInferRequest:
    edit(request)
    return request


BAD = {
    "unknown input 'x'": _with(raw_request(), lambda r: setattr(r.inputs[0], "name", "x")),
    "datatype must be FP32 (the model's), got 'FP64'": _with(raw_request(), lambda r: setattr(r.inputs[0], "datatype", "FP64")),
    "shape must be [-1, 4] (-1: any size), got [3, 5]": _with(raw_request(), lambda r: r.inputs[0].shape.__setitem__(1, 5)),
    "raw_input_contents has 44 bytes; shape [3, 4] of FP32 needs 48": _with(
        raw_request(), lambda r: r.raw_input_contents.__setitem__(0, Z.tobytes()[:44])),
    "input 'z' must be finite": _nan(),
    "raw_input_contents has 2 entries; it needs one per input (1)": _with(
        raw_request(), lambda r: r.raw_input_contents.append(b"")),
    "unknown output 'logits'": _with(raw_request(), lambda r: r.outputs.add(name="logits")),
    "contents.fp32_contents has 2 values; shape [3, 4] needs 12": _with(
        v2.ModelInferRequest(model_name="vae"),
        lambda r: r.inputs.add(name="z", datatype="FP32", shape=[3, 4]).contents.fp32_contents.extend([0.0, 1.0])),
    "the batch dimension must be 1..4096, got 0": raw_request(z=np.zeros((0, 4), dtype=np.float32)),
    "missing inputs ['label']": raw_request(model="cvae"),
}


@pytest.mark.parametrize("message", list(BAD))
def test_bad_tensors_are_invalid_argument_with_a_clear_message(stub, message):
    """Each malformed ModelInfer is refused before anything is enqueued, saying what is allowed."""
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(BAD[message], timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()


def test_label_out_of_range_is_invalid_argument(stub):
    """A conditional model's label must index one of its classes."""
    request = raw_request(model="cvae")
    request.inputs.add(name="label", datatype="INT64", shape=[3])
    request.raw_input_contents.append(np.array([0, 1, 10], dtype=np.int64).tobytes())
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "label' must hold classes 0..9, got 0..10" in err.value.details()


@pytest.mark.parametrize("call", ["ModelInfer", "ModelMetadata", "ModelReady"])
def test_unknown_model_is_not_found(stub, call):
    """An unknown model is NOT_FOUND for inference, metadata and readiness."""
    requests = {"ModelInfer": raw_request(model="nope"), "ModelMetadata": v2.ModelMetadataRequest(name="nope"),
                "ModelReady": v2.ModelReadyRequest(name="nope")}
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, call)(requests[call], timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_infer_tensors_is_a_table_apart_from_the_native_loops():
    """ModelInfer's op is served by exactly the tensor loops, and LOOPS (InferenceService) lacks it."""
    from genserve.protocol import LOOPS, OPEN_INFERENCE_LOOPS, Op
    from genserve.workers.loops import HANDLERS

    assert {loop for loop, op in HANDLERS if op == Op.INFER_TENSORS} == set(OPEN_INFERENCE_LOOPS)
    assert all(Op.INFER_TENSORS not in spec.ops for spec in LOOPS.values())
    assert set(v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name) == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"}
