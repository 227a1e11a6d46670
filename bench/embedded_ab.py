"""Embedded gateways (`genserve serve`) of several trees or settings, beside KServe, in one run.

    git archive <rev> | tar -x -C /tmp/before && ln -s ../services ../workers ../export /tmp/before/genserve/
    .venv/bin/python -m bench.embedded_ab --repository R now=. before=/tmp/before [--kserve]
    .venv/bin/python -m bench.embedded_ab --repository R now=. thread-pool=.:GENSERVE_WORKER__INLINE_SAMPLES=0

Each variant is `label=TREE[:ENV=VALUE,...]`: a `genserve serve` (no broker, one ONNX Runtime
thread) whose `genserve` package comes from TREE (PYTHONPATH; `.` is this checkout) with
those settings; with --kserve, KServe's ModelServer on the same graph (`make bench-peers`
builds its virtualenv). Every server stays up for the whole run; one `bench.loadgen` (its own
process, the one-sample v2 ModelInfer of `make bench-peers`) visits each at each concurrency,
the order rotated per round. Per point: req/s, p50, p99 and the server's CPU per request (from
/proc, idle time included). The table gives medians over rounds. The bench for the
Redis path is bench/revisions.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.__main__ import ROOT, free_port
from bench.hops import cpu_seconds
from bench.peers import input_spec, load, start_kserve, wait_ready


def start_embedded(variant: str, repository: Path, log_dir: Path) -> tuple[str, subprocess.Popen, str]:
    label, _, rest = variant.partition("=")
    tree, _, extra = rest.partition(":")
    env = {**os.environ, "GENSERVE_LOG_LEVEL": "WARNING"}
    env.pop("GENSERVE_BROKER_URL", None)
    if Path(tree or ".").resolve() != ROOT:  # this checkout is what the virtualenv imports anyway
        env["PYTHONPATH"] = str(Path(tree).resolve())
    env.update(dict(kv.split("=", 1) for kv in extra.split(",") if kv))
    port = free_port()
    log = open(log_dir / f"{label}.log", "w")  # noqa: SIM115 (the child keeps it)
    process = subprocess.Popen([sys.executable, "-m", "genserve", "serve", "--repository", str(repository),
                                "--port", str(port), "--threads", "1"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
    return label, process, f"127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="label=TREE[:ENV=VALUE,...]")
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", default="vae")
    parser.add_argument("--kserve", action="store_true", help="KServe's ModelServer beside them")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="genserve-embedded-ab-"))
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for variant in args.variants:
            label, process, address = start_embedded(variant, args.repository, logs)
            servers[label] = (process, address)
        if args.kserve:
            servers["kserve"] = start_kserve(args.model, args.repository, 1, logs / "kserve.log")
        for process, address in servers.values():
            wait_ready(address, process)
        spec = input_spec(args.repository, args.model)
        points: dict[tuple[int, str], list[tuple[float, float, float, float]]] = {}
        for r in range(args.rounds):
            order = list(servers.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for conc in args.concurrency:
                for label, (process, address) in order:
                    before = cpu_seconds(process.pid)
                    out = load(address, args.model, spec, conc, 1.0, args.duration)
                    cpu_us = (cpu_seconds(process.pid) - before) / max(1, out["requests"]) * 1e6
                    points.setdefault((conc, label), []).append((out["rps"], out["p50_ms"], out["p99_ms"], cpu_us))
                    print(f"round {r} c={conc} {label:14s} {out['rps']:7.0f} req/s  p50 {out['p50_ms']:.3f} ms  "
                          f"p99 {out['p99_ms']:.2f} ms  server CPU {cpu_us:.0f} us/request", flush=True)
        print("\n| variant | concurrency | req/s | p50 ms | p99 ms | server CPU us/request |\n|---|---:|---:|---:|---:|---:|")
        for (conc, label), rows in sorted(points.items()):
            rps, p50, p99, cpu = (statistics.median(column) for column in zip(*rows))
            print(f"| {label} | {conc} | {rps:,.0f} | {p50:.3f} | {p99:.2f} | {cpu:.0f} |")
    finally:
        for process, _ in servers.values():
            process.terminate()
        for process, _ in servers.values():
            process.wait(timeout=30)
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
