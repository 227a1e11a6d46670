"""genserve's own Python per ModelInfer, in process, with no gRPC: what the embedded gateway adds.

    .venv/bin/python -m bench.servicer_cost --repository R [--model vae] [--calls 3000] [--rounds 3]

Builds the embedded gateway's objects (settings, catalog, Dispatcher with its LocalBackend,
OpenInferenceServicer) and calls ModelInfer back to back the way grpc.aio would, through the
gateway's decoding and metrics interceptors, with a stand-in context: request bytes in,
response bytes out. Each round also times the same model's ONNX Runtime session alone on the
same input (the worker's OnnxModel), so that the rest, genserve's Python (decoding,
validation, request id and metrics, dispatcher, the worker's op, response), reads off in one
run. gRPC's own cost per call is what `python -m bench.interceptors` measures (its "none"
row); a full round trip through sockets is `make bench-peers`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.loadgen import infer_request
from bench.peers import input_spec
from genserve.oip import grpc_predict_v2_pb2_grpc as v2_grpc
from genserve.repository import ModelRepository
from genserve.settings import Settings
from genserve.services.catalog import ModelCatalog
from genserve.services.decoding import DecodingInterceptor
from genserve.services.dispatch import Dispatcher
from genserve.services.metrics import MetricsInterceptor
from genserve.services.open_inference import OpenInferenceServicer
from genserve.workers.runtime import OnnxModel

METHOD = "/inference.GRPCInferenceService/ModelInfer"


class Context:
    """What the gateway's code asks of a grpc.aio ServicerContext on the success path."""

    def time_remaining(self) -> float | None:
        return None

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    def code(self) -> None:
        return None

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


class Details:
    method = METHOD
    invocation_metadata = ()


class Registry:
    """Receives the generated add_*_to_server registration instead of a server."""

    def __init__(self) -> None:
        self.generic: Any = None

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        (self.generic,) = handlers

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        pass


async def handler_chain(registry: Registry, metrics: MetricsInterceptor) -> grpc.RpcMethodHandler:
    """ModelInfer's handler as the server's interceptors (decoding, then metrics) return it."""

    async def base(details: Any) -> grpc.RpcMethodHandler:
        return registry.generic.service(details)

    async def counted(details: Any) -> grpc.RpcMethodHandler:
        return await metrics.intercept_service(base, details)

    return await DecodingInterceptor().intercept_service(counted, Details)


async def run(args: argparse.Namespace) -> None:
    os.environ.pop("GENSERVE_BROKER_URL", None)  # the embedded mode
    settings = Settings(model_repository=str(args.repository))
    settings.worker.intra_op_threads = 1
    dispatcher = Dispatcher(settings)
    catalog = ModelCatalog(ModelRepository(args.repository), settings.gateway.manifest_ttl_s)
    catalog.rescan()
    manifest = catalog.resolve(args.model)
    request = infer_request(args.model, 0, input_spec(args.repository, args.model))  # what bench.loadgen sends
    raw = request.SerializeToString()
    (tensor,) = request.inputs
    feeds = {tensor.name: np.frombuffer(request.raw_input_contents[0], np.float32).reshape(list(tensor.shape))}
    servicer = OpenInferenceServicer(settings, catalog, dispatcher)
    context = Context()
    registry = Registry()
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, registry)
    metrics = MetricsInterceptor(dispatcher.metrics)
    onnx = OnnxModel.load(str(ModelRepository(args.repository).verified_path(manifest)), settings.worker, 1)

    async def call() -> bytes:
        handler = await handler_chain(registry, metrics)  # per call, as grpc.aio runs interceptors
        return handler.response_serializer(await handler.unary_unary(raw, context))

    for _ in range(200):
        await call()
        onnx.run(feeds)
    totals, alone = [], []
    for r in range(args.rounds):
        started = time.perf_counter()
        for _ in range(args.calls):
            await call()
        totals.append((time.perf_counter() - started) / args.calls * 1e6)
        started = time.perf_counter()
        for _ in range(args.calls):
            onnx.run(feeds)
        alone.append((time.perf_counter() - started) / args.calls * 1e6)
        print(f"round {r}: ModelInfer in process {totals[-1]:.0f} us a call, ONNX Runtime alone {alone[-1]:.0f} us",
              flush=True)
    total, ort = statistics.median(totals), statistics.median(alone)
    print(f"\n{args.model}, {args.calls} calls x {args.rounds} rounds (medians): ModelInfer {total:.0f} us a call, "
          f"of which ONNX Runtime alone {ort:.0f} us; genserve's Python {total - ort:.0f} us")
    await dispatcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", default="vae")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
