"""Where a request's time goes: timestamps at each hop, in each process, and CPU per process.

    python -m bench.hops --repository /tmp/perf-repo              # through Redis, concurrency 1
    python -m bench.hops --repository /tmp/perf-repo --embedded   # the embedded mode
    python -m bench.hops --repository /tmp/perf-repo --concurrency 8

Starts a private Redis (append-only, fsync every second), `genserve worker` and `genserve
gateway` (or `genserve serve` with --embedded) through this module, which first wraps the
functions each hop passes through so that they record a wall-clock timestamp on entry (and
some on exit) into a per-process file; the code under test is otherwise unchanged. One
client in this process sends pre-serialized v2 ModelInfer requests (one VAE sample) and
stamps send and receive. At concurrency 1 every request produces each event once, and a short
pause between requests (--gap-ms) lets each one's trailing work end before the next, so the
n-th stamp of each event belongs to the n-th request: the table is the median time between
consecutive events; req/s leaves the pauses out. At higher concurrency the same medians are only indicative (requests
overlap), and the CPU seconds per request of each process (from /proc, over the measured
requests) are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent

# (module, attribute path, event on entry, event on exit or None), per process.
GATEWAY_HOOKS = [
    ("genserve.services.open_inference", "OpenInferenceServicer.ModelInfer", "gw: servicer entered", "gw: response built"),
    ("genserve.services.dispatch", "Dispatcher.submit", "gw: validated, dispatching", None),
    ("genserve.services.batcher", "Batcher._run", "gw: batch formed", None),
    ("genserve.services.backends.celery", "TaskPublisher.publish", "gw: publishing (LPUSH)", "gw: LPUSH answered"),
    ("genserve.services.backends.celery", "ResultListener._resolve", "gw: result message read", None),
    ("genserve.services.backends.celery", "CeleryBackend._decode", "gw: waiter woke, decoding", None),
    ("genserve.services.backends.local", "LocalBackend.run", "gw: handing to the worker code", None),
]
WORKER_HOOKS = [
    # kombu's BRPOP read also returns on timeouts, so its n-th stamp is not the n-th request's:
    # the worker's first stamp is the receipt (workers/receipts.py), sent as the message arrives.
    ("genserve.workers.receipts", "_read_ready", "wk: message received, receipt sent", None),
    ("kombu.transport.redis", "QoS.append", "wk: unacked ZADD+HSET", "wk: unacked stored"),
    ("genserve.workers.failover", "Failover.own", "wk: owner check (OWN script)", "wk: owned"),
    ("genserve.workers.tasks", "execute", "wk: task body started", "wk: task body returned"),
    ("genserve.workers.strategy", "expired", "wk: strategy took the message", None),
    ("genserve.workers.runtime", "OnnxModel.run", "wk: ONNX Runtime run", "wk: ONNX Runtime returned"),
    ("celery.backends.redis", "RedisBackend._set", "wk: result SET+PUBLISH", "wk: result stored"),
    ("genserve.workers.results", "ResultBackend._store_once", "wk: result check+SETEX+PUBLISH (one script)",
     "wk: result stored"),
    ("kombu.transport.redis", "QoS.ack", "wk: ack ZREM+HDEL", "wk: acked"),
]


class Recorder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.events: list[tuple[str, int]] = []
        atexit.register(self.flush)

    def stamp(self, event: str) -> None:
        self.events.append((event, time.time_ns()))

    def flush(self) -> None:
        with open(self.path, "w") as f:
            json.dump(self.events, f)


def _wrap(recorder: Recorder, fn: Callable, enter: str, leave: str | None) -> Callable:
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            recorder.stamp(enter)
            try:
                return await fn(*args, **kwargs)
            finally:
                if leave:
                    recorder.stamp(leave)
    else:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            recorder.stamp(enter)
            try:
                return fn(*args, **kwargs)
            finally:
                if leave:
                    recorder.stamp(leave)
    return wrapper


def install(recorder: Recorder, hooks: list[tuple[str, str, str, str | None]]) -> None:
    import importlib

    for module_name, path, enter, leave in hooks:
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        if owner is None or not hasattr(owner, name):
            continue  # a hop this version does not have
        setattr(owner, name, _wrap(recorder, getattr(owner, name), enter, leave))


def role_main(role: str, out: str, argv: list[str]) -> None:
    """Inside a server process: wrap the hops, then run genserve's own entry point."""
    import signal

    recorder = Recorder(out)
    install(recorder, GATEWAY_HOOKS + WORKER_HOOKS)
    signal.signal(signal.SIGUSR1, lambda *_: recorder.flush())
    from genserve.cli import main

    sys.argv = ["genserve", role, *argv]
    main()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(address: str, model: str, spec: str, concurrency: int, requests: int, gap_s: float,
                recorder: Recorder, pids: dict[str, int]) -> tuple[float, dict[str, float], list[float]]:
    import grpc

    from bench.loadgen import METHODS, infer_request

    channel = grpc.aio.insecure_channel(address)
    method = channel.unary_unary(METHODS["ModelInfer"])
    body = infer_request(model, 0, spec).SerializeToString()
    per_client = requests // concurrency
    latencies: list[float] = []
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    began = time.perf_counter()

    async def client() -> None:
        for _ in range(per_client):
            started = time.perf_counter()
            recorder.stamp("client: sent")
            await method(body, timeout=30)
            recorder.stamp("client: received")
            latencies.append(time.perf_counter() - started)
            if gap_s:
                await asyncio.sleep(gap_s)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    cpu = {name: (cpu_seconds(pid) - before[name]) / len(latencies) * 1e3 for name, pid in pids.items()}
    seconds -= gap_s * per_client
    await channel.close()
    return seconds, cpu, latencies


def timeline(files: list[Path], measured_from: int) -> list[tuple[str, float]]:
    """The median gap between consecutive events of a request, over the measured requests."""
    events: dict[str, list[int]] = {}
    for path in files:
        if path.exists():
            for name, t in json.loads(path.read_text()):
                if t >= measured_from:
                    events.setdefault(name, []).append(t)
    n = min(len(v) for v in events.values())
    per_request = [{name: v[i] for name, v in events.items()} for i in range(n)]
    # Events in the order of their median offset from the client's send (the worker's ack of
    # request n may come after the client sent request n + 1).
    offset = {name: statistics.median(r[name] - r["client: sent"] for r in per_request) for name in events}
    order = sorted(events, key=offset.__getitem__)
    gaps: dict[str, list[float]] = {name: [] for name in order}
    for at in per_request:
        for a, b in zip(order, order[1:]):
            gaps[b].append((at[b] - at[a]) / 1e6)
    return [(order[0], 0.0)] + [(name, statistics.median(gaps[name])) for name in order[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", default="vae")
    parser.add_argument("--embedded", action="store_true", help="genserve serve, no broker")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=None,
                        help="pause between a client's requests so that each one's trailing work (the ack) ends "
                             "before the next is sent; default 3 ms at concurrency 1, else 0")
    args = parser.parse_args()
    if args.gap_ms is None:
        args.gap_ms = 3.0 if args.concurrency == 1 else 0.0

    from bench.__main__ import free_port
    from bench.peers import input_spec, wait_ready

    tmp = Path(tempfile.mkdtemp(prefix="genserve-hops-"))
    env = dict(os.environ, GENSERVE_LOG_LEVEL="WARNING", GENSERVE_QUEUE_PREFIX=f"hops{os.getpid()}")
    env.pop("GENSERVE_BROKER_URL", None)
    processes: dict[str, subprocess.Popen] = {}
    me = [sys.executable, "-m", "bench.hops", "--role"]
    port = free_port()
    repo = ["--repository", str(args.repository)]
    try:
        if args.embedded:
            processes["gateway+worker"] = subprocess.Popen(
                [*me, "serve", str(tmp / "serve.json"), *repo, "--port", str(port), "--provider", "cpu", "--threads", "1"],
                env=env, cwd=ROOT)
        else:
            redis_port = free_port()
            processes["redis"] = subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                 "--appendfsync", "everysec", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{redis_port}/0"
            processes["worker"] = subprocess.Popen(
                [*me, "worker", str(tmp / "worker.json"), "--broker-url", url, *repo, "--provider", "cpu",
                 "--threads", "1", "--queues", args.model], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            processes["gateway"] = subprocess.Popen(
                [*me, "gateway", str(tmp / "gateway.json"), "--broker-url", url, *repo, "--port", str(port)],
                env=env, cwd=ROOT)
        address = f"127.0.0.1:{port}"
        wait_ready(address, next(p for name, p in processes.items() if name != "redis"))
        recorder = Recorder(str(tmp / "client.json"))
        pids = {name: p.pid for name, p in processes.items()} | {"client": os.getpid()}
        measured_from = time.time_ns() + 1  # set after the warm-up, below
        spec = input_spec(args.repository, args.model)

        async def run() -> tuple[float, dict[str, float], list[float]]:
            nonlocal measured_from
            import grpc

            from bench.loadgen import METHODS, infer_request

            async with grpc.aio.insecure_channel(address) as channel:  # load the model, warm the path
                method = channel.unary_unary(METHODS["ModelInfer"])
                for _ in range(args.warmup):
                    await method(infer_request(args.model, 0, spec).SerializeToString(), timeout=30)
            await asyncio.sleep(0.2)  # the warm-up's trailing acks land before the measured window
            measured_from = time.time_ns()
            return await drive(address, args.model, spec, args.concurrency, args.requests, args.gap_ms / 1e3,
                               recorder, pids)

        seconds, cpu, latencies = asyncio.run(run())
        recorder.flush()
    finally:
        for name, process in processes.items():
            if name != "redis":
                process.terminate()
        for name, process in processes.items():
            if name != "redis":
                process.wait(timeout=30)
        if "redis" in processes:
            processes["redis"].terminate()
            processes["redis"].wait(timeout=30)
    files = sorted(tmp.glob("*.json"))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ms = sorted(latencies)
    print(f"# hops: {'embedded' if args.embedded else 'through Redis'}, concurrency {args.concurrency}, "
          f"{len(latencies)} requests, {len(latencies) / seconds:.0f} req/s, client p50 {ms[len(ms) // 2] * 1e3:.2f} ms; "
          f"load average {load}")
    print("\n| step (time since the previous event, median ms) | ms |\n|---|---:|")
    total = 0.0
    for name, gap in timeline(files, measured_from):
        total += gap
        print(f"| {name} | {gap:.3f} |")
    print(f"| (sum of the medians) | {total:.3f} |")
    print("\n| process | CPU ms per request |\n|---|---:|")
    for name, value in cpu.items():
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--role":
        role_main(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main()
