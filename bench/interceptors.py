"""What the gateway's interceptors cost per call, on a server that does nothing else.

    .venv/bin/python -m bench.interceptors [--rounds 2] [--concurrency 64]

A grpc.aio server whose ModelInfer answers a fixed response (no batcher, no Redis, no model)
runs with: no interceptors; the decoding interceptor; the metrics interceptor; both (the
gateway's set, auth off); two that only pass the call on (grpc's interceptor machinery
alone); and grpc's synchronous server (a thread pool of 4) with the same fixed answer.
`bench.loadgen` drives each in turn, its own process, and the server's CPU per call comes from
/proc.

A variant may carry server settings after a `;`: `none;opt:grpc.http2.bdp_probe=0` passes a
channel argument to grpc.aio.server, `none;env:GRPC_EXPERIMENTS=pollset_alternative` sets an
environment variable of the server process (gRPC core reads its experiments at start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from typing import Any

VARIANTS = ("none", "pass-through x2", "decoding", "metrics", "decoding+metrics",
            "sync server (4 threads)")


def settings(variant: str) -> tuple[str, list[tuple[str, int | str]], dict[str, str]]:
    """(base variant, grpc server options, environment) of `base;opt:K=V;env:K=V`."""
    base, *extras = variant.split(";")
    options: list[tuple[str, int | str]] = []
    env: dict[str, str] = {}
    for extra in extras:
        kind, _, setting = extra.partition(":")
        key, _, value = setting.partition("=")
        if kind == "opt" and key and value:
            options.append((key, int(value) if value.lstrip("-").isdigit() else value))
        elif kind == "env" and key:
            env[key] = value
        else:
            raise ValueError(f"{extra!r}: expected opt:KEY=VALUE or env:KEY=VALUE")
    if base not in VARIANTS:
        raise ValueError(f"unknown variant {base!r}; choose from: {', '.join(VARIANTS)}")
    return base, options, env


def serve(variant: str, port: int) -> None:
    import grpc

    variant, options, _ = settings(variant)

    from genserve.oip import grpc_predict_v2_pb2 as v2
    from genserve.oip import grpc_predict_v2_pb2_grpc as v2_grpc
    from genserve.services.decoding import DecodingInterceptor
    from genserve.services.metrics import GatewayMetrics, MetricsInterceptor

    response = v2.ModelInferResponse(model_name="vae", model_version="1")
    response.outputs.add(name="x", datatype="FP32", shape=[1, 784])
    response.raw_output_contents.append(b"\0" * 3136)

    class Fixed(v2_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            return response

    if variant.startswith("sync"):
        from concurrent.futures import ThreadPoolExecutor

        class FixedSync(v2_grpc.GRPCInferenceServiceServicer):
            def ModelInfer(self, request: Any, context: Any) -> Any:
                return response

        sync_server = grpc.server(ThreadPoolExecutor(max_workers=4), options=options)
        v2_grpc.add_GRPCInferenceServiceServicer_to_server(FixedSync(), sync_server)
        sync_server.add_insecure_port(f"127.0.0.1:{port}")
        sync_server.start()
        print("ready", flush=True)
        sync_server.wait_for_termination()
        return

    class PassOn(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            return await continuation(details)

    chosen = {"none": [], "pass-through x2": [PassOn(), PassOn()], "decoding": [DecodingInterceptor()],
              "metrics": [MetricsInterceptor(GatewayMetrics())],
              "decoding+metrics": [DecodingInterceptor(), MetricsInterceptor(GatewayMetrics())]}[variant]

    async def main() -> None:
        server = grpc.aio.server(interceptors=chosen, options=options)
        v2_grpc.add_GRPCInferenceServiceServicer_to_server(Fixed(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--serve", nargs=2, metavar=("VARIANT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    variants = args.variants.split(",")
    for variant in variants:
        try:
            settings(variant)
        except ValueError as e:
            parser.error(str(e))
    from bench.__main__ import ROOT, free_port
    from bench.hops import cpu_seconds
    from bench.peers import wait_ready

    results: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        for variant in variants:
            port = free_port()
            env = {**os.environ, **settings(variant)[2]}
            server = subprocess.Popen([sys.executable, "-m", "bench.interceptors", "--serve", variant, str(port)],
                                      stdout=subprocess.PIPE, cwd=ROOT, env=env)
            try:
                server.stdout.readline()  # type: ignore[union-attr]
                wait_ready(f"127.0.0.1:{port}", server)

                def load(duration: float) -> dict[str, Any]:
                    out = subprocess.run([sys.executable, "-m", "bench.loadgen", "--address", f"127.0.0.1:{port}",
                                          "--op", "infer", "--model", "vae", "--input", "z:FP32:1,16",
                                          "--concurrency", str(args.concurrency), "--warmup", "0.2",
                                          "--duration", str(duration)], capture_output=True, text=True, cwd=ROOT)
                    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])

                load(1.0)
                before = cpu_seconds(server.pid)
                point = load(args.duration)
                cpu_us = (cpu_seconds(server.pid) - before) / point["requests"] * 1e6
                results.setdefault(variant, []).append((point["rps"], cpu_us, point["p50_ms"]))
            finally:
                server.terminate()
                server.wait(timeout=30)
    print(f"| server (concurrency {args.concurrency}) | req/s per round | p50 ms per round "
          "| server CPU us per call per round |")
    print("|---|---|---|---|")
    for variant, points in results.items():
        rps = ", ".join(f"{r:,.0f}" for r, _, _ in points)
        cpu = ", ".join(f"{c:.0f}" for _, c, _ in points)
        p50 = ", ".join(f"{p:.3f}" for _, _, p in points)
        print(f"| {variant} | {rps} | {p50} | {cpu} |")


if __name__ == "__main__":
    main()
