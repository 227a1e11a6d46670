"""The Open Inference Protocol's op in the worker: the graph on named tensors, nothing else.

ModelInfer (services/open_inference.py) sends op INFER_TENSORS to the models of
`genserve.protocol.OPEN_INFERENCE_LOOPS`. Each request carries the graph's inputs by name as
wire tensors, already checked by the gateway against the manifest (names, dtypes, shapes, a
common batch size, finite floats), and the names of the outputs it wants. Requests are
stacked along the batch axis by `run_requests`, like the loops' own ops, so the v2 path
batches exactly as GenerateImages or Classify do.
"""

from __future__ import annotations

from typing import Any

from genserve.tensors import to_wire, wire_array
from genserve.workers.batching import CallLog, Feeds, Outcome, run_requests
from genserve.workers.runtime import LoadedModel


def infer_tensors(loaded: LoadedModel, requests: list[dict[str, Any]], calls: CallLog) -> list[Outcome]:
    """Each request's input tensors -> the graph (stacked with the others) -> its requested outputs."""
    names = loaded.onnx.output_names

    def prepare(request: dict[str, Any]) -> Feeds:
        return {name: wire_array(wire) for name, wire in request["inputs"].items()}

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        wanted = request.get("outputs") or names
        return {"ok": True, "outputs": {name: to_wire(out[name]) for name in wanted}}

    return run_requests(loaded.onnx, requests, prepare, finish, loaded.max_batch_size, calls)
