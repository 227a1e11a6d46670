"""ModelInfer of the Open Inference Protocol (KServe v2): named tensors checked against the
manifest's graph signature (OnnxFile inputs and outputs) and the deployment's limits.

The checks, each an InvalidArgumentError that names the tensor and what is allowed: the model
answers ModelInfer at all (a tensor loop); every graph input given once and no other; the
datatype the graph declares (no silent casts); the rank and fixed dimensions of the graph, the
variable ones free; one batch size (the first dimension) across inputs, within the limits;
raw byte lengths or typed-content counts matching the shape; floats finite; a conditional
model's `label` within its classes; requested outputs among the graph's. What passes is the
worker's trusted payload (`to_task`).
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any

import numpy as np

from genserve.errors import InvalidArgumentError
from genserve.oip import grpc_predict_v2_pb2 as v2
from genserve.protocol import OPEN_INFERENCE_LOOPS, Loop, rpcs_of, serves_open_inference
from genserve.repository import Manifest, TensorSpec
from genserve.settings import LimitSettings
from genserve.tensors import to_wire

# v2 datatype -> (numpy dtype, field of InferTensorContents; None: raw contents only)
DATATYPES: dict[str, tuple[np.dtype, str | None]] = {
    "BOOL": (np.dtype("bool"), "bool_contents"),
    "UINT8": (np.dtype("u1"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"),
    "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"),
    "INT8": (np.dtype("i1"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"),
    "INT32": (np.dtype("<i4"), "int_contents"),
    "INT64": (np.dtype("<i8"), "int64_contents"),
    "FP16": (np.dtype("<f2"), None),
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
}
_BY_NUMPY = {dtype.name: name for name, (dtype, _) in DATATYPES.items()}


def datatype_of(numpy_name: str) -> str:
    """The v2 datatype of a manifest dtype ("float32" -> "FP32"); BYTES for anything else."""
    return _BY_NUMPY.get(numpy_name, "BYTES")


@dataclass(frozen=True)
class InferInput:
    """A ModelInfer request that passed every check."""

    inputs: dict[str, np.ndarray]  # graph input name -> array, in the graph's dtype
    outputs: list[str]  # graph outputs to return, in the order asked (all when none asked)
    raw: bool  # the client sent raw_input_contents: answer with raw_output_contents too
    batch: int  # rows along the first dimension

    def samples(self) -> int:
        return self.batch

    def to_task(self) -> dict[str, Any]:
        return {"inputs": {name: to_wire(a) for name, a in self.inputs.items()}, "outputs": self.outputs}


def require_tensor_model(manifest: Manifest) -> None:
    if not serves_open_inference(manifest.loop):
        loops = ", ".join(sorted(str(loop) for loop in OPEN_INFERENCE_LOOPS))
        raise InvalidArgumentError(
            f"model {manifest.ref} is a {manifest.kind} ({manifest.loop}); ModelInfer serves models of "
            f"the loops {loops}; call genserve.v1.InferenceService {', '.join(rpcs_of(manifest.loop, manifest.files))} instead"
        )


def model_infer(request: v2.ModelInferRequest, manifest: Manifest, limits: LimitSettings) -> InferInput:
    require_tensor_model(manifest)
    graph = manifest.files["model"]
    declared = {t.name: t for t in graph.inputs}
    raw = len(request.raw_input_contents) > 0
    if raw and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidArgumentError(
            f"raw_input_contents has {len(request.raw_input_contents)} entries; it needs one per input "
            f"({len(request.inputs)})"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name not in declared:
            raise InvalidArgumentError(
                f"unknown input {tensor.name!r}; model {manifest.ref} takes {_names(graph.inputs)}"
            )
        if tensor.name in arrays:
            raise InvalidArgumentError(f"input {tensor.name!r} is given twice")
        content = request.raw_input_contents[i] if raw else None
        arrays[tensor.name] = _array(tensor, declared[tensor.name], content)
    missing = [name for name in declared if name not in arrays]
    if missing:
        raise InvalidArgumentError(f"missing inputs {missing}; model {manifest.ref} takes {_names(graph.inputs)}")
    batch = _batch(arrays, manifest, limits)
    _check_label(arrays, manifest)
    return InferInput({name: arrays[name] for name in declared}, _outputs(request, manifest), raw, batch)


def _names(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{t.name} {datatype_of(t.dtype)} {t.shape}" for t in specs)


def _array(tensor: Any, spec: TensorSpec, raw: bytes | None) -> np.ndarray:
    name, want = tensor.name, datatype_of(spec.dtype)
    if tensor.datatype != want:
        raise InvalidArgumentError(f"input {name!r}: datatype must be {want} (the model's), got {tensor.datatype!r}")
    shape = list(tensor.shape)
    fits = len(shape) == len(spec.shape) and all(d >= 0 and (s < 0 or d == s) for d, s in zip(shape, spec.shape))
    if not fits:
        raise InvalidArgumentError(f"input {name!r}: shape must be {spec.shape} (-1: any size), got {shape}")
    dtype, field = DATATYPES[want]
    count = math.prod(shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidArgumentError(f"input {name!r}: contents must be empty when raw_input_contents is used")
        if len(raw) != count * dtype.itemsize:
            raise InvalidArgumentError(
                f"input {name!r}: raw_input_contents has {len(raw)} bytes; shape {shape} of {want} needs "
                f"{count * dtype.itemsize}"
            )
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    else:
        array = _typed(tensor, field, dtype, count, shape)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidArgumentError(f"input {name!r} must be finite (no NaN or infinity)")
    return array


def _typed(tensor: Any, field: str | None, dtype: np.dtype, count: int, shape: list[int]) -> np.ndarray:
    name = tensor.name
    if field is None:
        raise InvalidArgumentError(f"input {name!r}: {tensor.datatype} has no typed contents; send raw_input_contents")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidArgumentError(f"input {name!r}: contents.{field} has {len(values)} values; shape {shape} needs {count}")
    array = np.asarray(values, dtype=np.float64 if dtype.kind == "f" else None)
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidArgumentError(f"input {name!r}: values must fit {tensor.datatype} ({info.min}..{info.max})")
    return array.astype(dtype).reshape(shape)


def _batch(arrays: dict[str, np.ndarray], manifest: Manifest, limits: LimitSettings) -> int:
    sizes = {name: a.shape[0] if a.ndim else 1 for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise InvalidArgumentError(f"inputs must share their first (batch) dimension, got {sizes}")
    batch = next(iter(sizes.values()))
    limit = limits.max_count if manifest.loop == Loop.LATENT_SAMPLER else limits.max_images
    if not 1 <= batch <= limit:
        raise InvalidArgumentError(f"the batch dimension must be 1..{limit}, got {batch}")
    return batch


def _check_label(arrays: dict[str, np.ndarray], manifest: Manifest) -> None:
    """A class-conditional model's `label` indexes an embedding: out of range would fail inside it."""
    label = arrays.get("label")
    if label is None or not manifest.conditional or label.dtype.kind not in "iu":
        return
    classes = len(manifest.labels)
    if label.size and (label.min() < 0 or label.max() >= classes):
        raise InvalidArgumentError(f"input 'label' must hold classes 0..{classes - 1}, got {label.min()}..{label.max()}")


def _outputs(request: v2.ModelInferRequest, manifest: Manifest) -> list[str]:
    graph = manifest.files["model"]
    declared = [t.name for t in graph.outputs]
    names: list[str] = []
    for output in request.outputs:
        if output.name not in declared:
            raise InvalidArgumentError(f"unknown output {output.name!r}; model {manifest.ref} gives {_names(graph.outputs)}")
        if output.name in names:
            raise InvalidArgumentError(f"output {output.name!r} is asked for twice")
        if "classification" in output.parameters:
            raise InvalidArgumentError(f"output {output.name!r}: the classification extension is not supported; "
                                       "ask for the tensor and take its top k")
        names.append(output.name)
    return names or declared
