"""Async gRPC load generator: fixed concurrency for a fixed duration after a warm-up.

Runs in its own process (`python -m bench.loadgen ...`) so the client's CPU is visible as a
separate process and never shares an event loop with the gateway. Each client serializes its
request once and sends the same bytes every time, and reads the response as bytes: the
client's per-call cost is the same whichever server answers (bench/peers.py drives genserve
and KServe with it). Prints one JSON line:
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
from genserve.tensors import from_proto, to_proto
from genserve.v1 import inference_pb2, tensor_pb2


def digit_tensor(seed: int) -> tensor_pb2.Tensor:
    """One 28x28 grey image (1, 1, 28, 28) float32 in [0, 1]: a seeded noisy stroke, digit-sized."""
    rng = np.random.default_rng(seed)
    image = np.zeros((1, 1, 28, 28), dtype=np.float32)
    image[0, 0, 6:22, 12:16] = 1.0  # a "1"; the load, not the content, is what is measured
    return to_proto(np.clip(image + rng.normal(0.0, 0.3, image.shape), 0.0, 1.0).astype(np.float32))


# v2 ModelInfer's input for --op infer: "name:DATATYPE:shape", the digit image by default.
DIGIT_INPUT = "image:FP32:1,1,28,28"
METHODS = {"GenerateImages": "/genserve.v1.InferenceService/GenerateImages",
           "Denoise": "/genserve.v1.InferenceService/Denoise",
           "Classify": "/genserve.v1.InferenceService/Classify",
           "ModelInfer": "/inference.GRPCInferenceService/ModelInfer"}


def infer_request(model: str, seed: int, spec: str) -> v2.ModelInferRequest:
    """One v2 ModelInfer request with its input as raw bytes (the digit, or seeded normal noise)."""
    name, datatype, shape = spec.split(":")
    dims = [int(d) for d in shape.split(",")]
    if name == "image":  # the digit as the graph's raw `image`
        array = from_proto(digit_tensor(seed))
    else:  # latents and other inputs: seeded standard normal
        array = np.random.default_rng(seed).standard_normal(dims, dtype=np.float32)
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=dims)
    request.raw_input_contents.append(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return request


def make_request(op: str, model: str, seed: int, infer_input: str = DIGIT_INPUT) -> tuple[str, object]:
    if op == "generate":
        return "GenerateImages", inference_pb2.GenerateImagesRequest(model=model, count=1, seed=seed)
    if op == "denoise":
        return "Denoise", inference_pb2.DenoiseRequest(model=model, images=digit_tensor(seed))
    if op == "classify":
        return "Classify", inference_pb2.ClassifyRequest(model=model, images=digit_tensor(seed), top_k=3)
    if op == "infer":  # the Open Inference Protocol's ModelInfer
        return "ModelInfer", infer_request(model, seed, infer_input)
    raise ValueError(f"unknown op {op!r}")


async def run(address: str, op: str, model: str, concurrency: int, warmup_s: float, duration_s: float,
              infer_input: str = DIGIT_INPUT) -> dict:
    channel = grpc.aio.insecure_channel(address)
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.perf_counter() + warmup_s + duration_s

    async def client(index: int) -> None:
        nonlocal errors
        method_name, request = make_request(op, model, index, infer_input)
        # Pre-serialized: no serializer on the way out, none on the way back (bytes both ways).
        method = channel.unary_unary(METHODS[method_name])
        request = request.SerializeToString()
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
    parser.add_argument("--input", default=DIGIT_INPUT, help="--op infer: the input, name:DATATYPE:shape")
    args = parser.parse_args()
    result = asyncio.run(run(args.address, args.op, args.model, args.concurrency, args.warmup, args.duration,
                             args.input))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
