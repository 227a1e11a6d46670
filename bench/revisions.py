"""Two revisions of genserve (or two settings of one) through Redis, side by side in one run.

    git archive <rev> | tar -x -C /tmp/before          # the other revision's tree
    .venv/bin/python -m bench.revisions --repository /tmp/perf-repo --a /tmp/before [--rounds 4]
    .venv/bin/python -m bench.revisions --repository R --a-env GENSERVE_WORKER__RECEIPTS=false

Starts two stacks at once (each its own Redis with AOF fsync every second, one `genserve
worker` with one ONNX Runtime thread, one `genserve gateway`): A runs the tree given by --a
(default: this checkout) with the --a-env settings, B this checkout with --b-env. The load
client (`bench.loadgen`, its own process, one-sample v2 ModelInfer) alternates between them,
every concurrency in every round, the order rotated, so both see the same machine; the
table gives medians over rounds and the CPU per request of each stack's processes (from
/proc, over each point, including what they spent idle).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.hops import cpu_seconds
from bench.peers import machine

ROOT = Path(__file__).resolve().parent.parent


def tree_env(tree: Path) -> dict[str, str]:
    """PYTHONPATH that makes `genserve` (and its services/workers/export parts) that tree's."""
    if tree.resolve() == ROOT:
        return {}
    package = tree / "genserve"
    for part in ("services", "workers", "export"):  # the checkout's layout maps them into genserve
        link = package / part
        if not link.exists() and (tree / part).is_dir():
            link.symlink_to(Path("..") / part)
    return {"PYTHONPATH": str(tree)}


class Stack:
    def __init__(self, name: str, tree: Path, settings: list[str], repository: Path, model: str) -> None:
        from bench.__main__ import free_port

        self.name, self.processes = name, []
        tmp = tempfile.mkdtemp(prefix=f"genserve-rev-{name}-")
        redis_port, self.port = free_port(), free_port()
        self.processes.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--dir", tmp], stdout=subprocess.DEVNULL))
        time.sleep(0.4)
        env = dict(os.environ, GENSERVE_LOG_LEVEL="WARNING", GENSERVE_QUEUE_PREFIX=f"rev{redis_port}",
                   **tree_env(tree), **dict(kv.split("=", 1) for kv in settings))
        env.pop("GENSERVE_BROKER_URL", None)
        url = f"redis://127.0.0.1:{redis_port}/0"
        log = open(Path(tmp) / "stack.log", "w")
        common = ["--broker-url", url, "--repository", str(repository)]
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "genserve", "worker", *common, "--provider", "cpu", "--threads", "1",
             "--queues", model], env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT))
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "genserve", "gateway", *common, "--port", str(self.port)],
            env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT))

    def cpu(self) -> list[float]:
        return [cpu_seconds(p.pid) for p in self.processes]

    def close(self) -> None:
        for process in self.processes[::-1]:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", default="vae")
    parser.add_argument("--a", type=Path, default=ROOT, help="the tree stack A runs (default: this checkout)")
    parser.add_argument("--a-env", nargs="*", default=[], help="KEY=VALUE settings of stack A")
    parser.add_argument("--b-env", nargs="*", default=[], help="KEY=VALUE settings of stack B (this checkout)")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()

    from bench.peers import input_spec, wait_ready

    spec = input_spec(args.repository, args.model)
    levels = [int(c) for c in args.concurrency.split(",")]
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    stacks = [Stack("A", args.a.resolve(), args.a_env, args.repository, args.model),
              Stack("B", ROOT, args.b_env, args.repository, args.model)]
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for stack in stacks:
            wait_ready(f"127.0.0.1:{stack.port}", stack.processes[-1])
        def load(stack: Stack, c: int, warmup: float, duration: float) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "bench.loadgen", "--address", f"127.0.0.1:{stack.port}",
                                   "--op", "infer", "--model", args.model, "--input", spec, "--concurrency", str(c),
                                   "--warmup", str(warmup), "--duration", str(duration)],
                                  capture_output=True, text=True, cwd=ROOT)

        for stack in stacks:  # each worker loads the model and runs the path once before any round
            load(stack, 8, 2.0, 1.0)
        for r in range(args.rounds):
            for c in levels:
                for stack in (stacks if (r + c) % 2 == 0 else stacks[::-1]):
                    before = stack.cpu()
                    out = load(stack, c, 0.3, args.duration)
                    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
                    if not lines:
                        raise SystemExit(f"load client failed against {stack.name}: {out.stderr[-800:]}")
                    point = json.loads(lines[-1])
                    point["cpu_ms"] = [(b - a) / max(1, point["requests"]) * 1e3
                                       for a, b in zip(before, stack.cpu())]
                    points.setdefault((stack.name, c), []).append(point)
                    print(f"round {r} c={c} {stack.name}: {point['rps']:.0f} req/s, p50 {point['p50_ms']:.2f} ms, "
                          f"p99 {point['p99_ms']:.2f} ms, errors {point['errors']}", flush=True)
    finally:
        for stack in stacks:
            stack.close()
    cpu = machine(load_before)["cpu"]
    print(f"\n# A: {args.a} {' '.join(args.a_env)}; B: {ROOT} {' '.join(args.b_env)}\n")
    print(f"{cpu}, {os.cpu_count()} cores; load average {load_before} before, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after; {args.rounds} rounds of {args.duration:g} s, medians\n")
    print("| concurrency | A req/s | B req/s | B/A | A p50 ms | B p50 ms | A p99 ms | B p99 ms | "
          "CPU ms/request A (redis, worker, gateway) | B |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for c in levels:
        a, b = points[("A", c)], points[("B", c)]

        def med(xs: list[dict[str, Any]], key: str) -> float:
            return statistics.median(x[key] for x in xs)

        def cpus(xs: list[dict[str, Any]]) -> str:
            return ", ".join(f"{statistics.median(x['cpu_ms'][i] for x in xs):.2f}" for i in range(3))

        print(f"| {c} | {med(a, 'rps'):,.0f} | {med(b, 'rps'):,.0f} | {med(b, 'rps') / med(a, 'rps'):.2f}x | "
              f"{med(a, 'p50_ms'):.2f} | {med(b, 'p50_ms'):.2f} | {med(a, 'p99_ms'):.2f} | {med(b, 'p99_ms'):.2f} | "
              f"{cpus(a)} | {cpus(b)} |")


if __name__ == "__main__":
    main()
