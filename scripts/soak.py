"""Soak: mixed traffic and a batch job while workers are SIGKILLed and Redis restarts.

    python scripts/soak.py --repository models --requests 2000 --concurrency 16

Starts a private redis-server (append-only file) on a free port, `--workers` `genserve worker`
processes and one `genserve gateway`, all on 127.0.0.1. It sends `--requests` calls at
`--concurrency`: GenerateImages (seeded) for every latent-sampler model, Classify and Denoise
for image classifiers and denoisers, CompleteText (seeded) for GPTs, plus one GenerateImages
batch job. Meanwhile a worker is SIGKILLed every `--kill-every` seconds and started again, and
Redis is stopped and restarted once. Expectations come from one call of each kind before the
faults start (seeded, so every later answer must be byte-identical).

Prints sent, succeeded, failed by status, lost (calls that never ended within deadline + 10 s:
must be 0) and wrong (an answer that differs from the expectation: must be 0), and the job's
verification (checksums, every index once, samples equal to GenerateImages). Exit status 1 if
lost, wrong or the job's verification fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable

import grpc
import numpy as np
import redis

from genserve.jobs import layout
from genserve.repository import ModelRepository
from genserve.tensors import from_proto, to_proto
from genserve.v1 import inference_pb2, inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc

DEADLINE_S = 20.0
FAST_FAILOVER = {"GENSERVE_WORKER__VISIBILITY_TIMEOUT_S": "60", "GENSERVE_WORKER__FAILOVER_TTL_S": "2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A private Redis, N workers and a gateway as child processes."""

    def __init__(self, repository: Path, workers: int, work: Path) -> None:
        self.repository, self.work = repository, work
        self.redis_port, self.port = free_port(), free_port()
        self.url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = dict(os.environ, GENSERVE_QUEUE_PREFIX="soak", GENSERVE_JOBS__ROOT=str(work / "jobs"),
                        PYTHONUNBUFFERED="1", **FAST_FAILOVER)
        self.redis = self._redis()
        self.workers = [self._worker(i) for i in range(workers)]
        self.gateway = self._spawn("gateway", ["gateway", "--repository", str(repository), "--broker-url", self.url,
                                               "--host", "127.0.0.1", "--port", str(self.port)])

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "a")
        return subprocess.Popen([sys.executable, "-m", "genserve", *argv, "--log-level", "WARNING"],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def _worker(self, i: int) -> subprocess.Popen:
        return self._spawn(f"worker-{i}", ["worker", "--broker-url", self.url, "--repository", str(self.repository),
                                           "--threads", "2"])

    def _redis(self) -> subprocess.Popen:
        process = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                    "--appendonly", "yes", "--dir", str(self.work), "--save", ""],
                                   stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                redis.Redis(port=self.redis_port).ping()
                return process
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill_a_worker(self) -> None:
        i = random.randrange(len(self.workers))
        self.workers[i].send_signal(signal.SIGKILL)
        self.workers[i].wait()
        self.workers[i] = self._worker(i)

    def restart_redis(self, down_s: float = 2.0) -> None:
        self.redis.terminate()
        self.redis.wait()
        time.sleep(down_s)
        self.redis = self._redis()

    def stop(self) -> None:
        for process in [self.gateway, *self.workers, self.redis]:
            process.terminate()
        for process in [self.gateway, *self.workers, self.redis]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def calls_for(repository: Path, stub: inference_pb2_grpc.InferenceServiceStub) -> dict[str, Callable[[], bytes]]:
    """One seeded call per (model, RPC) the repository serves; each returns comparable bytes."""
    calls: dict[str, Callable[[], bytes]] = {}
    rng = np.random.default_rng(0)
    for m in ModelRepository(repository).manifests():
        if m.loop == "latent_sampler":
            label = {"label": 1} if m.conditional else {}
            request = inference_pb2.GenerateImagesRequest(model=m.name, count=4, seed=7, **label)
            calls[f"GenerateImages {m.name}"] = lambda r=request: stub.GenerateImages(r, timeout=DEADLINE_S).images.data
        elif m.loop == "image_classifier" and m.image:
            images = rng.random((2, m.image.channels, m.image.height, m.image.width), dtype=np.float32)
            request = inference_pb2.ClassifyRequest(model=m.name, images=to_proto(images))
            calls[f"Classify {m.name}"] = lambda r=request: stub.Classify(r, timeout=DEADLINE_S).SerializeToString(deterministic=True)
        elif m.loop == "image_to_image" and m.image:
            images = rng.random((2, m.image.channels, m.image.height, m.image.width), dtype=np.float32)
            request = inference_pb2.DenoiseRequest(model=m.name, images=to_proto(images))
            calls[f"Denoise {m.name}"] = lambda r=request: stub.Denoise(r, timeout=DEADLINE_S).images.data
        elif m.loop == "autoregressive":
            request = inference_pb2.GenerateTextRequest(model=m.name, prompt="The ", max_new_tokens=16, seed=5)
            calls[f"CompleteText {m.name}"] = lambda r=request: bytes(
                str([t.id for t in stub.CompleteText(r, timeout=DEADLINE_S).tokens]), "ascii")
    return calls


def wait_ready(call: Callable[[], bytes], timeout_s: float = 90) -> bytes:
    end = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except grpc.RpcError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def verify_job(channel: grpc.Channel, stub: inference_pb2_grpc.InferenceServiceStub, job_id: str,
               model: str, count: int, seed: int) -> str:
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    end = time.monotonic() + 300
    while True:
        try:
            job = jobs.GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=10)
            if job.state in (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED):
                break
        except grpc.RpcError:
            pass
        if time.monotonic() > end:
            return "FAILED: the job did not finish within 300 s"
        time.sleep(1)
    if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        return f"FAILED: job ended {jobs_pb2.JobState.Name(job.state)}: {job.error}"
    folder = Path(job.result_dir)
    manifest = layout.read_manifest(folder)
    problems = layout.verify(folder, manifest)
    if problems:
        return f"FAILED: checksums: {problems[:3]}"
    images = layout.load_images(folder, manifest)
    if len(images) != count:
        return f"FAILED: {len(images)} items, expected {count}"
    for first in (0, count // 2, count - 1):
        request = inference_pb2.GenerateImagesRequest(model=model, seed=seed, first_index=first, count=1)
        alone = from_proto(stub.GenerateImages(request, timeout=30).images)
        if alone.tobytes() != images[first:first + 1].tobytes():
            return f"FAILED: item {first} differs from GenerateImages(first_index={first})"
    return f"OK: {count} items, {len(manifest['files'])} files, checksums verified, samples equal GenerateImages"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between worker SIGKILLs")
    parser.add_argument("--redis-restart-after", type=float, default=6.0, help="seconds into the run")
    parser.add_argument("--job-items", type=int, default=20_000)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("soak: needs redis-server on PATH", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="genserve-soak-"))
    cluster = Cluster(args.repository.resolve(), args.workers, work)
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.port}", options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    try:
        calls = calls_for(args.repository, stub)
        if not calls:
            print(f"soak: no servable models in {args.repository}", file=sys.stderr)
            return 2
        expected = {name: wait_ready(call) for name, call in calls.items()}
        sampler = next((n.split()[1] for n in calls if n.startswith("GenerateImages")), None)
        job_id = ""
        if sampler and args.job_items:
            job = jobs_pb2_grpc.JobServiceStub(channel).SubmitJob(jobs_pb2.SubmitJobRequest(
                generate_images=jobs_pb2.GenerateImagesJob(model=sampler, count=args.job_items, seed=13)), timeout=30)
            job_id = job.id
        stop = threading.Event()
        faults = Counter()

        def chaos() -> None:
            started, restarted = time.monotonic(), False
            while not stop.wait(args.kill_every):
                cluster.kill_a_worker()
                faults["worker SIGKILLs"] += 1
                if not restarted and time.monotonic() - started >= args.redis_restart_after:
                    cluster.restart_redis()
                    faults["Redis restarts"] += 1
                    restarted = True

        chaos_thread = threading.Thread(target=chaos, daemon=True)
        outcomes: Counter = Counter()
        wrong: list[str] = []
        names = list(calls)

        late: list[str] = []  # calls that waited to their deadline: what, when, the gateway's words

        def one(i: int) -> None:
            name = names[i % len(names)]
            begun = time.monotonic()
            try:
                if calls[name]() != expected[name]:
                    wrong.append(name)
                outcomes["OK"] += 1
            except grpc.RpcError as exc:
                outcomes[exc.code().name] += 1
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    late.append(f"{name} started at {begun - started:.1f} s, ended after {time.monotonic() - begun:.1f} s: "
                                f"{exc.details()}")

        started = time.monotonic()
        chaos_thread.start()
        with ThreadPoolExecutor(args.concurrency) as pool:
            futures = [pool.submit(one, i) for i in range(args.requests)]
            budget = time.monotonic() + args.requests / max(1, args.concurrency) * DEADLINE_S + 10
            for f in futures:
                with contextlib.suppress(FutureTimeout):  # counted as lost below
                    f.result(timeout=max(0.1, budget - time.monotonic()))
        lost = sum(not f.done() for f in futures)
        elapsed = time.monotonic() - started
        while faults["Redis restarts"] == 0 and chaos_thread.is_alive() and time.monotonic() - started < args.redis_restart_after + args.kill_every * 2:
            time.sleep(0.2)  # a short run still gets its Redis restart before the job is checked
        stop.set()
        chaos_thread.join()
        verification = verify_job(channel, stub, job_id, sampler, args.job_items, 13) if job_id else "no job (no latent sampler)"
        failed = {code: n for code, n in outcomes.items() if code != "OK"}
        print(f"soak: {elapsed:.1f} s, RPCs {', '.join(names)}; faults: {dict(faults)}")
        print(f"sent {args.requests}  succeeded {outcomes['OK']}  failed {sum(failed.values())} {failed}  "
              f"lost {lost}  wrong {len(wrong)}")
        for line in late:
            print(f"  deadline: {line}")
        print(f"job {job_id or '-'}: {verification}")
        return 0 if lost == 0 and not wrong and not verification.startswith("FAILED") else 1
    finally:
        channel.close()
        cluster.stop()
        print(f"logs in {work}")


if __name__ == "__main__":
    sys.exit(main())
