"""A worker's cost per task message, alone: N one-sample ModelInfer messages are queued first,
then one solo worker drains them. No gateway and no client compete for the cores, so the
messages per second and the worker's CPU per message are the worker's own (its Celery and
kombu path, its Redis round trips, ONNX Runtime), for each worker setting compared.

    .venv/bin/genserve export vae --repository /tmp/perf-repo
    .venv/bin/python -m bench.worker_drain --repository /tmp/perf-repo [--messages 3000] [--rounds 3]

Each round runs every variant once (the order rotated per round) on a private Redis
(append-only, fsync every second), with a fresh worker; the table gives the median of rounds.
Variants: `GENSERVE_WORKER__RECEIPTS=false` (kombu's own round trips), receipts with
`GENSERVE_WORKER__SHORT_STRATEGY=false` (Celery's Request, pool and tracer), and the default
(workers/receipts.py and workers/strategy.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.hops import cpu_seconds
from bench.peers import machine

VARIANTS = {"kombu's round trips (receipts off)": {"GENSERVE_WORKER__RECEIPTS": "false"},
            "receipts, Celery's strategy (short strategy off)": {"GENSERVE_WORKER__RECEIPTS": "true",
                                                                "GENSERVE_WORKER__SHORT_STRATEGY": "false"},
            "receipts and the short strategy (default)": {"GENSERVE_WORKER__RECEIPTS": "true"}}


def drain(repository: Path, model: str, messages: int, env_extra: dict[str, str]) -> dict[str, float]:
    import redis

    from bench.__main__ import free_port
    from bench.peers import input_spec
    from genserve.protocol import RESULT_PREFIX
    from genserve.repository import ModelRepository
    from genserve.services.backends.celery import TaskPublisher
    from genserve.settings import Settings
    from genserve.workers.app import create_app

    tmp = tempfile.mkdtemp(prefix="genserve-drain-")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "yes", "--appendfsync", "everysec", "--dir", tmp],
                              stdout=subprocess.DEVNULL)
    worker = None
    try:
        time.sleep(0.4)
        url, prefix = f"redis://127.0.0.1:{port}/0", "drain"
        client = redis.Redis.from_url(url)
        settings = Settings(broker_url=url, queue_prefix=prefix)
        publisher = TaskPublisher(create_app(settings, with_results=False), None)
        queue = settings.queue_for(model)
        name, _, shape = input_spec(repository, model).split(":")
        z = np.zeros([int(d) for d in shape.split(",")], np.float32)
        outputs = [t.name for t in ModelRepository(repository).resolve(model).files["model"].outputs]

        def message(task_id: str) -> bytes:
            request = {"inputs": {name: {"dtype": "float32", "shape": list(z.shape), "data": z.tobytes()}},
                       "outputs": outputs}
            payload = {"model": model, "op": "infer_tensors", "requests": [request], "sent_at": time.time()}
            return publisher.encode(task_id, queue, payload, time.time() + 600)

        env = dict(os.environ, GENSERVE_LOG_LEVEL="WARNING", GENSERVE_QUEUE_PREFIX=prefix, **env_extra)
        env.pop("GENSERVE_BROKER_URL", None)
        worker = subprocess.Popen([sys.executable, "-m", "genserve", "worker", "--broker-url", url,
                                   "--repository", str(repository), "--provider", "cpu", "--threads", "1",
                                   "--queues", model], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(50):  # warm: the model loaded, the path run
            client.lpush(queue, message(f"warm_{i}"))
        end = time.monotonic() + 120
        while not client.exists(f"{RESULT_PREFIX}warm_49") or client.llen(queue):
            assert time.monotonic() < end, "the worker answered no warm-up message"
            time.sleep(0.05)
        pipe = client.pipeline(transaction=False)
        for i in range(messages):
            pipe.lpush(queue, message(f"m_{i}"))
        cpu0, began = cpu_seconds(worker.pid), time.perf_counter()
        pipe.execute()
        last = f"{RESULT_PREFIX}m_{messages - 1}"
        while not client.exists(last):
            assert time.monotonic() < end + 600, "the worker did not drain the queue"
            time.sleep(0.005)
        seconds = time.perf_counter() - began
        answered = sum(1 for key in client.scan_iter(f"{RESULT_PREFIX}m_*", count=1000))
        return {"msg_s": messages / seconds, "cpu_ms": (cpu_seconds(worker.pid) - cpu0) / messages * 1e3,
                "answered": answered, "left_unacked": client.hlen("unacked")}
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", default="vae")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            point = drain(args.repository, args.model, args.messages, VARIANTS[name])
            results[name].append(point)
            print(f"round {r} {name}: {point['msg_s']:.0f} msg/s, worker CPU {point['cpu_ms']:.3f} ms/message, "
                  f"{point['answered']} answered, {point['left_unacked']} left unacked", flush=True)
    cpu = machine(load_before)["cpu"]
    print(f"\n# one solo worker draining {args.messages} queued one-sample messages ({args.model})\n")
    print(f"{cpu}, {os.cpu_count()} cores; load average {load_before} before, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after; {args.rounds} rounds, median\n")
    print("| worker | messages/s | range | worker CPU ms per message |\n|---|---:|---:|---:|")
    base = None
    for name in names:
        points = results[name]
        rate = statistics.median(p["msg_s"] for p in points)
        base = base or rate
        print(f"| {name} | {rate:,.0f} ({rate / base:.2f}x) | {min(p['msg_s'] for p in points):,.0f}-"
              f"{max(p['msg_s'] for p in points):,.0f} | {statistics.median(p['cpu_ms'] for p in points):.3f} |")


if __name__ == "__main__":
    main()
