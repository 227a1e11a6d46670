"""Batch-job benchmark: a generator job through gateway + Redis + one worker against a raw
in-process ONNX Runtime loop, GenerateImages latency with and without a job running, and the
gateway's and worker's memory during a large job. Prints a table.

    .venv/bin/genserve export vae --repository /tmp/jobs-bench-repo      # ~1 min on 2 cores
    .venv/bin/python -m bench.jobs --repository /tmp/jobs-bench-repo [--count 100000] [--big 1000000]

Uses the Redis at --redis (db 13, its own queue prefix) and a temporary jobs root, deleted after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np

from genserve import seeds
from genserve.repository import ModelRepository
from genserve.v1 import inference_pb2, inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc


def raw_loop(repository: Path, model: str, count: int, batch: int, threads: int) -> float:
    """Samples/s of seeds.latents + session.run in one process, the same batch size and threads."""
    import onnxruntime as ort

    manifest = ModelRepository(repository).resolve(model)
    path = ModelRepository(repository).verified_path(manifest, "model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    for first in range(0, count, batch):
        n = min(batch, count - first)
        session.run(None, {"z": seeds.latents(1, first, n, manifest.latent_dim)})
    return count / (time.perf_counter() - start)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def job_stack(repository: Path, redis_url: str, *worker_args: str) -> Iterator[tuple[Path, int, subprocess.Popen, subprocess.Popen]]:
    """`genserve gateway` + one `genserve worker` as processes on a private queue prefix and a
    temporary jobs root: (root, gateway port, gateway, worker); stopped and deleted after."""
    root = Path(tempfile.mkdtemp(prefix="genserve-bench-jobs-"))
    port = free_port()
    env = dict(os.environ, GENSERVE_QUEUE_PREFIX=f"bench-{uuid.uuid4().hex[:6]}", GENSERVE_JOBS__ROOT=str(root),
               GENSERVE_LOG_LEVEL="WARNING")
    common = ["--broker-url", redis_url, "--repository", str(repository)]
    gateway = subprocess.Popen([sys.executable, "-m", "genserve", "gateway", *common, "--port", str(port)], env=env)
    worker = subprocess.Popen([sys.executable, "-m", "genserve", "worker", *common, *worker_args,
                               "--log-level", "WARNING"], env=env)
    try:
        yield root, port, gateway, worker
    finally:
        for process in (worker, gateway):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def print_table(heading: str, rows: list[tuple[str, str]], value_width: int = 14) -> None:
    width = max(len(r[0]) for r in rows)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{heading}{os.cpu_count()} CPUs, load average at the end {load}")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>{value_width}}")


def wait_done(jobs: jobs_pb2_grpc.JobServiceStub, job_id: str) -> jobs_pb2.Job:
    last = None
    for last in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job_id)):
        pass
    return last


def latency_p50(stub: inference_pb2_grpc.InferenceServiceStub, model: str, calls: int) -> tuple[float, float]:
    """(p50, p90) in ms of GenerateImages(count=1) one at a time."""
    times = []
    for i in range(calls):
        started = time.perf_counter()
        stub.GenerateImages(inference_pb2.GenerateImagesRequest(model=model, count=1, seed=i), timeout=30)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3, float(np.percentile(times, 90)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("/tmp/jobs-bench-repo"))
    parser.add_argument("--model", default="vae")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=1_000_000, help="samples of the memory run (0: skip)")
    parser.add_argument("--chunk-size", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    manifest = ModelRepository(args.repository).resolve(args.model)
    batch = manifest.serving.max_batch_size
    rows = []
    with job_stack(args.repository, args.redis, "--threads", str(args.threads)) as (_, port, gateway, worker):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        stub, jobs = inference_pb2_grpc.InferenceServiceStub(channel), jobs_pb2_grpc.JobServiceStub(channel)
        for _ in range(100):
            try:
                stub.GenerateImages(inference_pb2.GenerateImagesRequest(model=args.model, count=1, seed=0), timeout=5)
                break
            except grpc.RpcError:
                time.sleep(0.5)

        before = raw_loop(args.repository, args.model, args.count, batch, args.threads)
        spec = jobs_pb2.GenerateImagesJob(model=args.model, count=args.count, seed=42, chunk_size=args.chunk_size)
        started = time.perf_counter()
        job = jobs.SubmitJob(jobs_pb2.SubmitJobRequest(generate_images=spec), timeout=60)
        accepted_ms = (time.perf_counter() - started) * 1e3
        final = wait_done(jobs, job.id)
        service = args.count / (time.perf_counter() - started)
        after = raw_loop(args.repository, args.model, args.count, batch, args.threads)
        raw = (before + after) / 2  # the machine is shared: the mean of a run before and after
        rows += [("raw ORT loop (latents + run), samples/s, before / after", f"{before:,.0f} / {after:,.0f}"),
                 (f"job through gateway+Redis+1 worker ({final.chunks_total} chunks), samples/s", f"{service:,.0f}"),
                 ("job / raw", f"{service / raw:.0%}"), ("SubmitJob answered in", f"{accepted_ms:.1f} ms")]
        shutil.rmtree(final.result_dir, ignore_errors=True)

        idle = latency_p50(stub, args.model, args.calls)
        busy_spec = jobs_pb2.GenerateImagesJob(model=args.model, count=max(args.big, args.count * 4), seed=1,
                                               chunk_size=args.chunk_size)
        busy = jobs.SubmitJob(jobs_pb2.SubmitJobRequest(generate_images=busy_spec), timeout=60)
        time.sleep(1.0)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((rss_mb(gateway.pid), rss_mb(worker.pid)))
                time.sleep(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        loaded = latency_p50(stub, args.model, args.calls)
        rows += [("GenerateImages(count=1) p50 / p90, idle", f"{idle[0]:.2f} / {idle[1]:.2f} ms"),
                 ("GenerateImages(count=1) p50 / p90, while a job runs", f"{loaded[0]:.2f} / {loaded[1]:.2f} ms"),
                 ("p50 loaded / idle", f"{loaded[0] / idle[0]:.2f}x")]
        if args.big:
            done = wait_done(jobs, busy.id)
            stop.set()
            sampler.join()
            gw, wk = zip(*samples)
            rows += [(f"{busy_spec.count:,}-sample job, samples/s", f"{done.items_per_second:,.0f}"),
                     ("gateway RSS during it (first / max / last)", f"{gw[0]:.0f} / {max(gw):.0f} / {gw[-1]:.0f} MB"),
                     ("worker RSS during it (first / max / last)", f"{wk[0]:.0f} / {max(wk):.0f} / {wk[-1]:.0f} MB")]
        else:
            stop.set()
            jobs.CancelJob(jobs_pb2.CancelJobRequest(id=busy.id), timeout=10)
    print_table(f"model {manifest.ref}, batch {batch}, {args.threads} ORT thread(s), chunk {args.chunk_size or 'default'}, ",
                rows)


if __name__ == "__main__":
    main()
