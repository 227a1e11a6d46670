"""`make bench-peers`: genserve beside KServe's ModelServer, same model, same client, one run.

Three servers stay up for the whole run, each in its own processes:

    kserve             KServe 0.21's ModelServer (.venv-kserve) with a small kserve.Model that
                       runs the model's ONNX graph in ONNX Runtime (bench/kserve_onnx.py), v2 gRPC
    genserve redis     a private Redis (append-only, fsync every second), one `genserve worker`
                       (solo pool) and `genserve gateway`: the durable, distributed path
    genserve embedded  `genserve serve` without a broker: the worker's code in the gateway

One load client (bench/loadgen.py, its own process) drives all three with the same
pre-serialized v2 ModelInfer request (the latents `z` as raw bytes, one sample) through the
same channel code, and reads responses as bytes, so the client costs the same per call
whoever answers. ModelInfer is the protocol all three speak; genserve's native
GenerateImages would make the gateway draw the latents itself and so measure a different
request. ONNX Runtime runs one intra-op thread in every system.

Rounds interleave: each round visits every concurrency, and at each concurrency every system
back to back (in a rotated order), so slow phases of a loaded machine fall on all three.
The table gives each point's median over rounds (and each round's numbers in the JSON);
ratios are genserve / KServe. Written to bench_results/peers.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.__main__ import ROOT, Stack, free_port
from genserve.repository import ModelRepository

SYSTEMS = ("kserve", "genserve redis", "genserve embedded")
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"


def wait_ready(address: str, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {address} exited with {process.returncode}")
        try:
            grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=1)
            return
        except grpc.FutureTimeoutError:
            continue
    raise TimeoutError(f"{address} not ready after {timeout_s:.0f} s")


class Peers(Stack):
    """The Redis stack of `make bench`, plus an embedded gateway and KServe's ModelServer."""

    def __init__(self, repository: Path, model: str, args: argparse.Namespace) -> None:
        args.workers, args.models = 1, model
        super().__init__(repository, args)
        try:
            self.addresses = {"genserve redis": self.start_gateway(True)}
            self.addresses["genserve embedded"] = self._embedded()
            self.addresses["kserve"] = self._kserve(model, repository)
        except BaseException:
            self.close()
            raise

    def _embedded(self) -> str:
        port = free_port()
        env = {k: v for k, v in self.env.items() if k != "GENSERVE_BROKER_URL"}
        log = open(self.tmp / "embedded.log", "w")
        process = subprocess.Popen([sys.executable, "-m", "genserve", "serve", "--repository", str(self.repository),
                                    "--port", str(port), "--provider", self.args.provider,
                                    "--threads", str(self.args.threads)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.processes.append(process)
        address = f"127.0.0.1:{port}"
        wait_ready(address, process)
        return address

    def _kserve(self, model: str, repository: Path) -> str:
        process, address = start_kserve(model, repository, self.args.threads, self.tmp / "kserve.log")
        self.processes.append(process)
        wait_ready(address, process)
        return address


def start_kserve(model: str, repository: Path, threads: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    """KServe's ModelServer (.venv-kserve) on the model's ONNX graph: (process, address), not yet ready."""
    if not KSERVE_PYTHON.exists():
        raise SystemExit(f"{KSERVE_PYTHON} is missing: `make bench-peers` builds it (kserve==0.21.0)")
    manifest = ModelRepository(repository).resolve(model)
    onnx = ModelRepository(repository).verified_path(manifest)
    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115 (the child keeps it)
    process = subprocess.Popen([str(KSERVE_PYTHON), str(ROOT / "bench" / "kserve_onnx.py"), "--model_name", model,
                                "--onnx", str(onnx), "--threads", str(threads),
                                "--grpc_port", str(port), "--http_port", str(free_port()),
                                "--enable_latency_logging", "false"],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return process, f"127.0.0.1:{port}"


def load(address: str, model: str, spec: str, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--address", address, "--op", "infer", "--model", model,
         "--input", spec, "--concurrency", str(concurrency), "--warmup", str(warmup), "--duration", str(duration)],
        capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def input_spec(repository: Path, model: str) -> str:
    manifest = ModelRepository(repository).resolve(model)
    graph = manifest.files["model"].inputs[0]
    return f"{graph.name}:FP32:1,{','.join(str(d) for d in graph.shape[1:])}"


def summarize(rounds: list[dict[str, Any]], concurrency: list[int]) -> list[dict[str, Any]]:
    rows = []
    for conc in concurrency:
        for system in SYSTEMS:
            points = [r for r in rounds if r["system"] == system and r["concurrency"] == conc]
            rows.append({"system": system, "concurrency": conc, "rounds": len(points),
                         "errors": sum(p["errors"] for p in points),
                         **{k: statistics.median(p[k] for p in points) for k in ("rps", "p50_ms", "p99_ms")},
                         "rps_range": [min(p["rps"] for p in points), max(p["rps"] for p in points)]})
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    by = {(r["system"], r["concurrency"]): r for r in rows}
    lines = []
    for conc in sorted({r["concurrency"] for r in rows}):
        k = by[("kserve", conc)]
        for system in SYSTEMS[1:]:
            g = by[(system, conc)]
            lines.append(f"- c={conc} {system} / kserve: req/s {g['rps'] / k['rps']:.2f}x, "
                         f"p50 {g['p50_ms'] / k['p50_ms']:.2f}x, p99 {g['p99_ms'] / k['p99_ms']:.2f}x")
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = ["# genserve beside KServe (`make bench-peers`)", "",
             f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
             f"load average {results['machine']['load_before']} before, {results['machine']['load_after']} after.",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in results["settings"].items()), "",
             "| system | concurrency | req/s (median of rounds) | req/s range | p50 ms | p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lo, hi = r["rps_range"]
        lines.append(f"| {r['system']} | {r['concurrency']} | {r['rps']:,.0f} | {lo:,.0f}-{hi:,.0f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
    return "\n".join(lines + ["", "Ratios (genserve / KServe, medians):", *results["ratios"], ""])


def machine(load_before: str) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_before": load_before,
            "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path,
                        default=Path(os.environ.get("GENSERVE_MODEL_REPOSITORY", "model_repository")))
    parser.add_argument("--model", default="vae")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads, every system")
    parser.add_argument("--provider", default="cpu", choices=["cpu"])
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private one")
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    spec = input_spec(args.repository, args.model)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    settings = {k: str(v) for k, v in vars(args).items()}
    peers = Peers(args.repository, args.model, args)
    measured: list[dict[str, Any]] = []
    try:
        for address in peers.addresses.values():  # load the model, open the connections
            load(address, args.model, spec, 1, 1.0, 0.5)
        for round_ in range(args.rounds):
            for conc in concurrency:
                order = SYSTEMS[round_ % 3:] + SYSTEMS[:round_ % 3]
                for system in order:
                    result = load(peers.addresses[system], args.model, spec, conc, args.warmup, args.duration)
                    measured.append({"round": round_, "system": system, "concurrency": conc, **result})
                    print(f"round {round_} c={conc:<3} {system:<18} {result['rps']:>8.0f} req/s  "
                          f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
                          f"errors {result['errors']}", flush=True)
    finally:
        peers.close()
    rows = summarize(measured, concurrency)
    results = {"settings": settings, "machine": machine(load_before), "rows": rows, "ratios": ratios(rows),
               "rounds": measured}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (args.out / "peers.md").write_text(text)
    print()
    print(text)
    print(f"written: {args.out / 'peers.md'}, {args.out / 'peers.json'}")


if __name__ == "__main__":
    main()
