"""The Open Inference Protocol (KServe v2) over gRPC, beside genserve's own API.

`inference.GRPCInferenceService` as KServe publishes it (protos/genserve/oip/), so that stock
clients (tritonclient.grpc, kserve's InferenceGRPCClient) call the tensor models with no
genserve code. Thin, like services/servicer.py: validate (services/validation/open_inference.py)
-> the same Dispatcher, Batcher and workers as the native RPCs (op INFER_TENSORS, one batcher per
model, so concurrent ModelInfer calls share task messages and ONNX Runtime calls) -> proto.
Errors map to status codes through services/errors.py's one table.

Outputs come back as raw_output_contents when the client sent raw inputs (as Triton answers,
and all tritonclient reads), otherwise as typed contents.
"""

from __future__ import annotations

import grpc

from genserve import __version__
from genserve.errors import ModelNotFoundError
from genserve.oip import grpc_predict_v2_pb2 as v2
from genserve.oip import grpc_predict_v2_pb2_grpc as v2_grpc
from genserve.protocol import Op, serves_open_inference
from genserve.repository import Manifest
from genserve.services import validation
from genserve.services.catalog import ModelCatalog
from genserve.services.dispatch import Dispatcher
from genserve.services.errors import unary
from genserve.services.validation.open_inference import DATATYPES, datatype_of, model_infer, require_tensor_model
from genserve.settings import Settings
from genserve.tensors import wire_array

SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name  # "inference.GRPCInferenceService"
PLATFORM = "onnxruntime_onnx"  # Triton's name for what the workers run


def model_ref(name: str, version: str) -> str:
    return f"{name}:{version}" if version else name


class OpenInferenceServicer(v2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, settings: Settings, catalog: ModelCatalog, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.catalog = catalog
        self.dispatcher = dispatcher

    @unary
    async def ServerLive(self, request: v2.ServerLiveRequest, context: grpc.aio.ServicerContext) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    @unary
    async def ServerReady(self, request: v2.ServerReadyRequest, context: grpc.aio.ServicerContext) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=await self.dispatcher.backend.ping())

    @unary
    async def ServerMetadata(self, request: v2.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(name="genserve", version=__version__, extensions=[])

    @unary
    async def ModelReady(self, request: v2.ModelReadyRequest, context: grpc.aio.ServicerContext) -> v2.ModelReadyResponse:
        """Ready: the model exists, answers ModelInfer and the broker answers (NOT_FOUND when unknown)."""
        manifest = self._resolve(request.name, request.version)
        ready = serves_open_inference(manifest.loop) and await self.dispatcher.backend.ping()
        return v2.ModelReadyResponse(ready=ready)

    @unary
    async def ModelMetadata(self, request: v2.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> v2.ModelMetadataResponse:
        manifest = self._resolve(request.name, request.version)
        require_tensor_model(manifest)
        graph = manifest.files["model"]

        def spec(t: object) -> v2.ModelMetadataResponse.TensorMetadata:
            return v2.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=datatype_of(t.dtype), shape=t.shape)

        return v2.ModelMetadataResponse(
            name=manifest.name, versions=self.catalog.repository.versions(manifest.name), platform=PLATFORM,
            inputs=[spec(t) for t in graph.inputs], outputs=[spec(t) for t in graph.outputs],
        )

    @unary
    async def ModelInfer(self, request: v2.ModelInferRequest, context: grpc.aio.ServicerContext) -> v2.ModelInferResponse:
        manifest = self._resolve(request.model_name, request.model_version)
        params = model_infer(request, manifest, self.settings.limits)
        timeout = validation.timeout_from(context.time_remaining(), self.settings.gateway.default_timeout_s)
        outcome = await self.dispatcher.submit(manifest, Op.INFER_TENSORS, params.to_task(), params.samples(), timeout)
        response = v2.ModelInferResponse(model_name=manifest.name, model_version=manifest.version, id=request.id)
        wires = {name: outcome["outputs"][name] for name in params.outputs}
        # Raw for every output or for none: raw_output_contents is indexed like `outputs`.
        raw = params.raw or any(DATATYPES[datatype_of(w["dtype"])][1] is None for w in wires.values())
        for name, wire in wires.items():
            _output(wire, name, raw, response)
        return response

    def _resolve(self, name: str, version: str) -> Manifest:
        if not name:
            raise ModelNotFoundError("a model name is required")
        return self.catalog.resolve(model_ref(name, version))


def _output(wire: dict, name: str, raw: bool, response: v2.ModelInferResponse) -> None:
    """One output from the worker's wire tensor: raw, its bytes as they came (little-endian,
    contiguous: genserve.tensors.to_wire), with no array in between; else typed contents."""
    datatype = datatype_of(wire["dtype"])
    tensor = response.outputs.add(name=name, datatype=datatype, shape=wire["shape"])
    if raw:
        response.raw_output_contents.append(wire["data"])
    else:
        getattr(tensor.contents, DATATYPES[datatype][1]).extend(wire_array(wire).ravel().tolist())
