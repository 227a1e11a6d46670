"""Write a family's graphs to ONNX and prove ONNX Runtime computes what PyTorch computes.

Each graph is traced with the legacy TorchScript exporter (`dynamo=False`: fast, and exact for
these small MLPs), opset 17, with a dynamic batch axis on every input and output. Kind, loop and
config go into the ONNX metadata so a worker can pick its serving loop from the file alone.
After export every graph is run with ONNX Runtime on random inputs of several batch sizes and
compared with PyTorch; a difference above the tolerance fails the export.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from genserve.export.core.spec import GraphSpec, ModelSpec
from genserve.repository import TensorSpec

OPSET = 17
PARITY_ATOL = 1e-4  # max abs difference allowed between ONNX Runtime and PyTorch outputs
PARITY_BATCHES = (1, 5, 64)  # batch sizes checked: 1 and a non-power-of-two catch shape bugs
EXAMPLE_BATCH = 2  # traced batch size; 1 could let the tracer specialise broadcasting
META_KIND, META_LOOP, META_CONFIG, META_ROLE = (
    "genserve.kind",
    "genserve.loop",
    "genserve.config",
    "genserve.role",
)


class OnnxParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree on an exported graph beyond the tolerance."""


@dataclass(frozen=True)
class ExportResult:
    paths: dict[str, Path]  # role -> ONNX file
    inputs: dict[str, list[TensorSpec]]  # role -> graph inputs, -1 for dynamic dims
    outputs: dict[str, list[TensorSpec]]  # role -> graph outputs
    parity: dict[str, float]  # role -> max abs diff against PyTorch over PARITY_BATCHES


def onnx_filename(role: str) -> str:
    """model.onnx for the serving graph, <role>.onnx otherwise (as the repository names them)."""
    return "model.onnx" if role == "model" else f"{role}.onnx"


def export_model(
    spec: ModelSpec,
    model: nn.Module,
    out_dir: Path,
    *,
    batch_sizes: tuple[int, ...] = PARITY_BATCHES,
    atol: float = PARITY_ATOL,
) -> ExportResult:
    """Export every graph of `model` into out_dir, check parity, read back the signatures."""
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, inputs, outputs, parity = {}, {}, {}, {}
    for role, graph in spec.graphs(model).items():
        paths[role] = out_dir / onnx_filename(role)
        export_graph(graph, paths[role], onnx_metadata(spec, model.config, role))
        parity[role] = check_parity(graph, paths[role], batch_sizes, atol)
        inputs[role], outputs[role] = graph_signature(paths[role])
    return ExportResult(paths, inputs, outputs, parity)


def onnx_metadata(spec: ModelSpec, config: Any, role: str) -> dict[str, str]:
    return {
        META_KIND: spec.kind,
        META_LOOP: spec.loop,
        META_CONFIG: json.dumps(asdict(config), sort_keys=True),
        META_ROLE: role,
    }


def export_graph(
    graph: GraphSpec, path: Path, metadata: dict[str, str], opset: int = OPSET
) -> None:
    """Trace one graph to `path` with a dynamic batch axis, then stamp its metadata."""
    example = graph.make_inputs(EXAMPLE_BATCH, torch.Generator().manual_seed(0))
    names = [*example, *graph.outputs]
    with warnings.catch_warnings():
        # dynamo=False is a deliberate choice (module docstring); its deprecation notices are noise
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            graph.module,
            tuple(example.values()),
            str(path),
            input_names=list(example),
            output_names=list(graph.outputs),
            dynamic_axes={name: {0: "batch"} for name in names},
            opset_version=opset,
            dynamo=False,
        )
    with torch.no_grad():
        traced = graph.module(*example.values())
    traced = traced if isinstance(traced, tuple) else (traced,)
    proto = onnx.load(str(path))
    declare_output_shapes(proto, [tuple(t.shape[1:]) for t in traced])
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)  # full_check: strict shape inference too
    onnx.save(proto, str(path))


def declare_output_shapes(proto: onnx.ModelProto, item_shapes: list[tuple[int, ...]]) -> None:
    """Write ("batch", *item_shape) on each output: the tracer leaves reshaped dims symbolic."""
    for value, item_shape in zip(proto.graph.output, item_shapes, strict=True):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        dims.add().dim_param = "batch"
        for size in item_shape:
            dims.add().dim_value = size


def read_metadata(path: Path) -> dict[str, str]:
    """The ONNX file's metadata_props as a dict."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def check_parity(
    graph: GraphSpec, path: Path, batch_sizes: tuple[int, ...], atol: float, seed: int = 0
) -> float:
    """Max abs diff between ONNX Runtime and PyTorch; OnnxParityError above `atol`."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    worst, where = 0.0, ""
    for batch in batch_sizes:
        inputs = graph.make_inputs(batch, g)
        with torch.no_grad():
            expected = graph.module(*inputs.values())
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = session.run(list(graph.outputs), {k: v.numpy() for k, v in inputs.items()})
        for name, want, got in zip(graph.outputs, expected, actual, strict=True):
            if got.shape != tuple(want.shape):
                raise OnnxParityError(
                    f"{path.name}: output {name!r} has shape {got.shape} in ONNX Runtime, "
                    f"{tuple(want.shape)} in PyTorch (batch {batch})"
                )
            diff = float(np.abs(got - want.numpy()).max())
            if diff > worst:
                worst, where = diff, f"output {name!r} at batch {batch}"
    if worst > atol:
        raise OnnxParityError(
            f"{path.name}: ONNX Runtime differs from PyTorch by {worst:.3g} (max abs, {where}); "
            f"allowed {atol:g}"
        )
    return worst


def tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    """Name, shape (-1 for a symbolic dim) and numpy dtype name of one graph input/output."""
    tensor = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return TensorSpec(name=value.name, shape=shape, dtype=dtype)


def graph_signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of an ONNX file, as the manifest records them."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return [tensor_spec(v) for v in graph.input], [tensor_spec(v) for v in graph.output]
