"""`make bench`: the service against its limits, one table per model.

Starts a private Redis, `genserve worker` and `genserve gateway` as separate processes, and
drives the gateway with the async load generator (its own process) at each concurrency,
with gateway batching on and off. Beside them, the same model run in-process by raw ONNX
Runtime (the limit: no gRPC, no queue) and by PyTorch eager. Prints the table, writes it as
markdown with the batch-size histograms, and plots it (PNG) under bench_results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench import inprocess, report
from genserve.repository import ModelRepository
from genserve.v1 import models_pb2, models_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
GENSERVE = [sys.executable, "-m", "genserve"]

# Model -> load generator op; models appear here as their issues land.
MODELS = {"vae": "generate", "dae": "denoise", "digits": "classify"}
# Models also measured through the Open Inference Protocol (KServe v2 ModelInfer, op "infer").
OPEN_INFERENCE = {"dae", "digits"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """Redis + workers + one gateway, each its own process, torn down on exit."""

    def __init__(self, repository: Path, args: argparse.Namespace) -> None:
        self.repository = repository
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="genserve-bench-"))
        self.processes: list[subprocess.Popen] = []
        self.gateway: subprocess.Popen | None = None
        self.env = dict(os.environ, GENSERVE_LOG_LEVEL="WARNING",
                        GENSERVE_QUEUE_PREFIX=f"bench{os.getpid()}")
        try:
            self.redis_url = args.redis_url or self._start_redis()
            for i in range(args.workers):
                self.processes.append(self._spawn(f"worker{i}", "worker", "--broker-url", self.redis_url,
                                                  "--repository", str(repository), "--provider", args.provider,
                                                  "--threads", str(args.threads), "--queues", args.models))
        except BaseException:  # no orphaned Redis or worker when the stack cannot start
            self.close()
            raise

    def _start_redis(self) -> str:
        port = free_port()
        # Append-only with fsync every second: the queue survives a Redis restart.
        self.processes.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL))
        time.sleep(0.5)
        return f"redis://127.0.0.1:{port}/0"

    def _spawn(self, name: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        return subprocess.Popen([*GENSERVE, *argv], env={**self.env, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, cwd=ROOT)

    def start_gateway(self, batching: bool, env: dict[str, str] | None = None) -> str:
        self.stop_gateway()
        port = free_port()
        flags = [] if batching else ["--no-batching"]
        self.gateway = self._spawn(f"gateway-{'on' if batching else 'off'}", "gateway", "--broker-url",
                                   self.redis_url, "--repository", str(self.repository), "--port", str(port),
                                   *flags, env=env)
        address = f"127.0.0.1:{port}"
        grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=60)
        return address

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.terminate()
            self.gateway.wait(timeout=30)
            self.gateway = None

    def close(self) -> None:
        self.stop_gateway()
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def load(address: str, op: str, model: str, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--address", address, "--op", op, "--model", model,
         "--concurrency", str(concurrency), "--warmup", str(args.warmup), "--duration", str(args.duration)],
        capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def batch_stats(address: str, model: str) -> dict[str, dict[int, int]]:
    with grpc.insecure_channel(address) as channel:
        info = models_pb2_grpc.ModelServiceStub(channel).GetModel(models_pb2.GetModelRequest(model=model), timeout=10)
    return {"requests_per_message": dict(info.batch_stats.requests_per_message),
            "samples_per_onnx_call": dict(info.batch_stats.samples_per_onnx_call),
            "provider": info.execution_provider}


def bench_service(stack: Stack, model: str, op: str, args: argparse.Namespace) -> tuple[list[dict], dict]:
    rows, histograms = [], {}
    for batching in (True, False):
        address = stack.start_gateway(batching)
        load(address, op, model, 1, argparse.Namespace(warmup=1.0, duration=0.5))  # load the model
        for concurrency in args.concurrency:
            result = load(address, op, model, concurrency, args)
            rows.append({"system": f"genserve, batching {'on' if batching else 'off'}",
                         "concurrency": concurrency, **result})
            print(report.row_line(model, rows[-1]), flush=True)
        if batching and model in OPEN_INFERENCE:
            for concurrency in args.concurrency:
                rows.append({"system": "genserve v2 ModelInfer, batching on", "concurrency": concurrency,
                             **load(address, "infer", model, concurrency, args)})
                print(report.row_line(model, rows[-1]), flush=True)
        histograms[f"batching {'on' if batching else 'off'}"] = batch_stats(address, model)
    stack.stop_gateway()
    return rows, histograms


# (batches in flight per gateway, max queue delay ms) compared by --sweep.
SWEEP = [(1, 0.0), (1, 2.0), (1, 5.0), (1, 10.0), (2, 2.0), (2, 5.0), (4, 5.0)]


def sweep(stack: Stack, model: str, op: str, concurrency: int, args: argparse.Namespace) -> list[dict]:
    """The batching knobs side by side at one concurrency, each with its mean batch size."""
    rows = []
    for inflight, delay in SWEEP:
        env = {"GENSERVE_BATCHING__MAX_INFLIGHT_BATCHES": str(inflight),
               "GENSERVE_BATCHING__MAX_QUEUE_DELAY_MS": str(delay)}
        address = stack.start_gateway(True, env)
        load(address, op, model, 1, argparse.Namespace(warmup=1.0, duration=0.5))
        result = load(address, op, model, concurrency, args)
        hist = batch_stats(address, model)["requests_per_message"]
        mean = sum(k * v for k, v in hist.items()) / max(1, sum(hist.values()))
        rows.append({"system": f"in flight {inflight}, delay {delay:g} ms", "concurrency": concurrency,
                     "mean_batch": mean, **result})
        print(report.row_line(model, rows[-1]) + f"  mean batch {mean:.1f}", flush=True)
    stack.stop_gateway()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path(os.environ.get("GENSERVE_MODEL_REPOSITORY", "model_repository")))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per worker")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "tensorrt", "auto"])
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private one")
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    parser.add_argument("--sweep", type=int, metavar="CONCURRENCY",
                        help="compare batching settings at this concurrency instead of the main table")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    repository = ModelRepository(args.repository)

    stack = Stack(args.repository, args)
    print(report.HEADER, flush=True)
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    try:
        models = [] if args.sweep else args.models.split(",")
        if args.sweep:
            model = args.models.split(",")[0]
            results["sweep"] = sweep(stack, model, MODELS[model], args.sweep, args)
        for model in models:
            manifest = repository.resolve(model)
            rows, histograms = bench_service(stack, model, MODELS[model], args)
            for row in inprocess.bench(repository, manifest, args.provider, args.threads, args.duration):
                rows.append(row)
                print(report.row_line(model, row), flush=True)
            results["models"][model] = {"rows": rows, "histograms": histograms}
    finally:
        stack.close()
    if "sweep" in results:
        report.write_sweep(results, args.out)
    else:
        report.write(results, args.out)


if __name__ == "__main__":
    main()
