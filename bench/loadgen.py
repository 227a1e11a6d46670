"""Async gRPC load generator: fixed concurrency for a fixed duration after a warm-up.

Runs in its own process (`python -m bench.loadgen ...`) so the client's CPU is visible as a
separate process and never shares an event loop with the gateway. Prints one JSON line:
{"requests", "errors", "seconds", "rps", "p50_ms", "p99_ms"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np

from genserve.oip import grpc_predict_v2_pb2 as v2
from genserve.oip import grpc_predict_v2_pb2_grpc as v2_grpc
from genserve.tensors import from_proto, to_proto
from genserve.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2


def digit_tensor(seed: int) -> tensor_pb2.Tensor:
    """One 28x28 grey image (1, 1, 28, 28) float32 in [0, 1]: a seeded noisy stroke, digit-sized."""
    rng = np.random.default_rng(seed)
    image = np.zeros((1, 1, 28, 28), dtype=np.float32)
    image[0, 0, 6:22, 12:16] = 1.0  # a "1"; the load, not the content, is what is measured
    return to_proto(np.clip(image + rng.normal(0.0, 0.3, image.shape), 0.0, 1.0).astype(np.float32))


def make_request(op: str, model: str, seed: int) -> tuple[str, object]:
    if op == "generate":
        return "GenerateImages", inference_pb2.GenerateImagesRequest(model=model, count=1, seed=seed)
    if op == "denoise":
        return "Denoise", inference_pb2.DenoiseRequest(model=model, images=digit_tensor(seed))
    if op == "classify":
        return "Classify", inference_pb2.ClassifyRequest(model=model, images=digit_tensor(seed), top_k=3)
    if op == "infer":  # the Open Inference Protocol's ModelInfer: the digit as the graph's raw `image`
        request = v2.ModelInferRequest(model_name=model)
        request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
        request.raw_input_contents.append(from_proto(digit_tensor(seed)).tobytes())
        return "ModelInfer", request
    raise ValueError(f"unknown op {op!r}")


async def run(address: str, op: str, model: str, concurrency: int, warmup_s: float, duration_s: float) -> dict:
    channel = grpc.aio.insecure_channel(address)
    stub = v2_grpc.GRPCInferenceServiceStub(channel) if op == "infer" else inference_pb2_grpc.InferenceServiceStub(channel)
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.perf_counter() + warmup_s + duration_s

    async def client(index: int) -> None:
        nonlocal errors
        method_name, request = make_request(op, model, index)
        method = getattr(stub, method_name)
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                await method(request, timeout=30)
            except grpc.aio.AioRpcError:
                errors += measuring
                continue
            if measuring:
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.ensure_future(client(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup_s)
    measuring = True
    began = time.perf_counter()
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - began
    await channel.close()
    ms = np.array(latencies) * 1e3 if latencies else np.array([float("nan")])
    return {"requests": len(latencies), "errors": errors, "seconds": seconds,
            "rps": len(latencies) / seconds, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--op", default="generate")
    parser.add_argument("--model", default="vae")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.address, args.op, args.model, args.concurrency, args.warmup, args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
