"""The `genserve` command: run the service's parts, build models, call the service.

    genserve serve                    gateway + worker on one machine (embedded: no Redis needed)
    genserve gateway --broker-url U   the gRPC gateway alone
    genserve worker --broker-url U    a Celery worker alone
    genserve train vae | export vae   train (resumable) / train + export + publish a model
    genserve import-hf DIR --name M   publish a local Hugging Face BERT classifier or GPT-2
    genserve models                   what the repository holds (the default version of each name marked)
    genserve models pin vae 1         through a gateway, admin key: "vae" serves vae:1 (unpin vae: the newest ready)
    genserve models rescan            through a gateway, admin key: re-read the repository now
    genserve generate vae -n 64 --seed 1 -o digits.png
    genserve text gpt "The assert statement" --max-new-tokens 64 --seed 3   (streams to stdout)
    genserve classify textclf "Return the base name of a path."
    genserve health --address 127.0.0.1:50051   exit 0 when the gateway is SERVING
    genserve job submit vae --count 1000000 --seed 42 --watch    (then: job fetch ID, list, cancel)

Settings come from GENSERVE_* environment variables; the flags below override them.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from genserve.jobs.cli import add_parser as add_job_parser, cmd_job
from genserve.settings import Settings


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, help="model repository root (GENSERVE_MODEL_REPOSITORY)")
    parser.add_argument("--broker-url", help="redis://host:6379/0; unset: embedded mode (GENSERVE_BROKER_URL)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (GENSERVE_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=["text", "json"], help="json: one object per line (GENSERVE_LOG_FORMAT)")


def _gateway_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (GENSERVE_GATEWAY__HOST)")
    parser.add_argument("--port", type=int, help="port, 0 for any free one (GENSERVE_GATEWAY__PORT)")
    parser.add_argument("--no-batching", action="store_true", help="one task message per request")


def _worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queues", help="comma-separated model names to serve (default: all)")
    parser.add_argument("--provider", choices=["auto", "cpu", "cuda", "tensorrt"], help="execution provider")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (0: automatic)")
    parser.add_argument("--concurrency", type=int, help="worker processes (1: in the consumer process)")


def _client_flags(parser: argparse.ArgumentParser) -> None:
    """Where a client command finds the running gateway, and how long it waits."""
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--api-key-file", type=Path, help="file holding the API key (or GENSERVE_API_KEY)")
    parser.add_argument("--tls", action="store_true", help="TLS to the gateway (system roots unless --ca)")
    parser.add_argument("--ca", help="PEM CA bundle that signed the gateway's certificate (implies --tls)")
    parser.add_argument("--cert", help="PEM client certificate, for mutual TLS (with --key)")
    parser.add_argument("--key", help="PEM private key of --cert")


def _client(args: argparse.Namespace) -> Any:
    """A Client from the client flags; the key from a file or GENSERVE_API_KEY, never a flag
    (command lines are visible to every user of the machine)."""
    import os

    from genserve.client import Client

    api_key = args.api_key_file.read_text().strip() if args.api_key_file else os.environ.get("GENSERVE_API_KEY")
    return Client(args.address, timeout_s=args.timeout, api_key=api_key or None, tls=args.tls,
                  ca=args.ca, cert=args.cert, key=args.key)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genserve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="gateway and worker on one machine")
    _common(serve), _gateway_flags(serve), _worker_flags(serve)
    gateway = sub.add_parser("gateway", help="the gRPC gateway (needs a broker)")
    _common(gateway), _gateway_flags(gateway)
    worker = sub.add_parser("worker", help="a Celery worker (needs a broker)")
    _common(worker), _worker_flags(worker)
    worker.add_argument("--pool", choices=["auto", "solo", "prefork", "threads"],
                        help="Celery pool; auto: threads when serving a text generator (GENSERVE_WORKER__POOL)")

    from genserve.export.registry import FAMILIES, help_text  # the family table only: no torch

    for name, text in (("train", "train a model (resumes from its checkpoint)"),
                       ("export", "train if needed, export to ONNX, publish to the repository")):
        build = sub.add_parser(name, help=text, description=text, epilog=help_text(),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(build)
        build.add_argument("family", help=f"model family: {', '.join(FAMILIES)}")
        build.add_argument("--name", help="model name in the repository (default: the family; with "
                                          "--conditional its variant's, e.g. cvae, cgan)")
        build.add_argument("--epochs", type=int, help="training epochs")
        build.add_argument("--data", type=Path, help="your own data set (for vae: a directory with MNIST IDX files)")
        build.add_argument("--limit", type=int, help="use only the first N digits")
        build.add_argument("--conditional", action="store_true", help="class-conditional model")
        build.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="checkpoint directory")
        build.add_argument("--seed", type=int, default=0)

    hf = sub.add_parser("import-hf", help="publish a local Hugging Face checkpoint (BERT classifier or GPT-2)")
    _common(hf)
    hf.add_argument("directory", type=Path, help="folder written by save_pretrained (config.json, weights, tokenizer)")
    hf.add_argument("--name", required=True, help="model name in the repository")
    hf.add_argument("--data", type=Path, help="classifiers: labelled texts (CSV/JSONL text,label) to score fp32 and int8 on")

    models = sub.add_parser("models", help="list the repository's models; pin, unpin, rescan through a gateway")
    _common(models)
    admin = models.add_subparsers(dest="models_action", metavar="{pin,unpin,rescan}",
                                  help="model administration through a running gateway (an admin key)")
    pin = admin.add_parser("pin", help="requests for NAME without a version go to VERSION (SetDefaultVersion)")
    pin.add_argument("name", help="model name, e.g. vae")
    pin.add_argument("version", help="a ready version of it, e.g. 1")
    unpin = admin.add_parser("unpin", help="NAME serves its newest ready version again")
    unpin.add_argument("name", help="model name, e.g. vae")
    rescan = admin.add_parser("rescan", help="the gateway re-reads the repository now (RescanRepository)")
    for action in (pin, unpin, rescan):
        _client_flags(action)

    generate = sub.add_parser("generate", help="generate images through a running gateway")
    generate.add_argument("model", help="model name, e.g. vae or vae:1")
    generate.add_argument("-n", "--count", type=int, default=64)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--label", type=int)
    generate.add_argument("-o", "--output", type=Path, default=Path("samples.png"))
    _client_flags(generate)

    text = sub.add_parser("text", help="stream generated text through a running gateway")
    text.add_argument("model", help="text generator, e.g. gpt")
    text.add_argument("prompt", nargs="?", default="", help="text to continue (default: empty)")
    text.add_argument("--max-new-tokens", type=int, default=64)
    text.add_argument("--temperature", type=float)
    text.add_argument("--top-k", type=int)
    text.add_argument("--top-p", type=float)
    text.add_argument("--repetition-penalty", type=float)
    text.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    text.add_argument("--seed", type=int)
    _client_flags(text)

    health = sub.add_parser("health", help="exit 0 when the gateway reports SERVING (container healthchecks)")
    health.add_argument("--service", default="", help="service name to check (default: the whole server)")
    _client_flags(health)
    health.set_defaults(timeout=3.0)

    classify = sub.add_parser("classify", help="classify texts through a running gateway")
    classify.add_argument("model", help="text classifier, e.g. textclf")
    classify.add_argument("texts", nargs="+")
    classify.add_argument("--top-k", type=int, default=1)
    _client_flags(classify)

    add_job_parser(sub, _client_flags)
    return parser


def build_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for flag, key in (("repository", "model_repository"), ("broker_url", "broker_url"), ("log_level", "log_level"),
                      ("log_format", "log_format")):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    gateway = {k: getattr(args, k) for k in ("host", "port") if getattr(args, k, None) is not None}
    worker = {key: getattr(args, flag) for flag, key in (
        ("queues", "queues"), ("provider", "execution_provider"), ("threads", "intra_op_threads"),
        ("concurrency", "concurrency"), ("pool", "pool")) if getattr(args, flag, None) is not None}
    if gateway:
        overrides["gateway"] = gateway
    if worker:
        overrides["worker"] = worker
    if getattr(args, "no_batching", False):
        overrides["batching"] = {"enabled": False}
    return Settings(**overrides)


def _logging(settings: Settings) -> None:
    from genserve.logs import configure

    configure(settings.log_level, settings.log_format)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from genserve.services.server import serve

    worker = None
    if not settings.embedded:  # distributed on one machine: the worker is its own process
        argv = [sys.executable, "-m", "genserve", "worker", "--broker-url", settings.broker_url,
                "--repository", str(settings.model_repository)]
        worker = subprocess.Popen(argv + _passthrough(args, ("queues", "provider", "threads", "concurrency")))
    try:
        asyncio.run(serve(settings))
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
    return 0


def _passthrough(args: argparse.Namespace, flags: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for flag in flags:
        if getattr(args, flag, None) is not None:
            out += [f"--{flag}", str(getattr(args, flag))]
    return out


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from genserve.services.server import serve

    if settings.embedded:
        print("genserve gateway needs --broker-url (or GENSERVE_BROKER_URL); "
              "`genserve serve` runs the embedded single-machine mode", file=sys.stderr)
        return 2
    asyncio.run(serve(settings))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from genserve.workers.main import run_worker

    return run_worker(settings)


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    """`train`: train and checkpoint; `export`: train (resuming), evaluate, export, publish."""
    from genserve.export.core.options import BuildOptions
    from genserve.export.registry import FAMILIES, default_name

    if args.family not in FAMILIES:
        print(f"unknown model family {args.family!r}; families: {', '.join(sorted(FAMILIES))}", file=sys.stderr)
        return 2
    name = args.name or default_name(args.family, args.conditional)
    options = BuildOptions(
        repo_root=settings.model_repository, name=name, checkpoint_dir=args.checkpoints / name,
        epochs=args.epochs, seed=args.seed, data_path=args.data, limit=args.limit,
        conditional=args.conditional, train_only=args.command == "train",
    )
    path = FAMILIES[args.family].build(options)
    print(f"{'checkpoint in' if options.train_only else 'published'} {path}")
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from genserve.repository import ModelRepository
    from genserve.services.catalog import ModelCatalog

    catalog = ModelCatalog(ModelRepository(settings.model_repository), ttl_s=float("inf"))  # one scan
    manifests = catalog.all()
    if not manifests:
        print(f"no models in {settings.model_repository}")
    for m in manifests:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in m.metrics.items())
        default = catalog.resolve(m.name).version == m.version  # what a gateway sends "name" to
        marker = ("  (default, pinned)" if catalog.pinned(m.name) else "  (default)") if default else ""
        print(f"{m.ref:<16} {m.kind:<10} {m.loop:<18} {metrics}{marker}")
    return 0


def cmd_models_admin(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """`models pin NAME VERSION`, `models unpin NAME`, `models rescan`: through the gateway."""
    with _client(args) as client:
        if args.models_action != "rescan":
            info = client.set_default_version(args.name, args.version if args.models_action == "pin" else None)
            print(f"{info.name} now serves {info.name}:{info.version} ({'pinned' if info.pinned else 'the newest ready'})")
            return 0
        found = client.rescan_repository()
    for ref in found.added:
        print(f"added       {ref}")
    for ref in found.removed:
        print(f"removed     {ref}")
    for line in found.unreadable:
        print(f"unreadable  {line}")
    for m in found.models:
        default = ("default, pinned" if m.pinned else "default") if m.latest else ""
        state = "ready" if m.ready else f"NOT READY: {m.not_ready_reason}"
        print(f"{m.name + ':' + m.version:<16} {default:<16} {state}")
    print(f"{len(found.models)} version(s); {len(found.added)} added, {len(found.removed)} removed, "
          f"{len(found.unreadable)} unreadable")
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from genserve.tensors import grid, png_encode

    with _client(args) as client:
        result = client.generate_images(args.model, args.count, seed=args.seed, label=args.label)
    args.output.write_bytes(png_encode(grid(result.images)))
    print(f"wrote {len(result.images)} images from {result.model} (seed {result.seed}) to {args.output}")
    return 0


def cmd_text(args: argparse.Namespace, settings: Settings | None = None) -> int:
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                "repetition_penalty": args.repetition_penalty, "stop": args.stop, "seed": args.seed}
    reason, seed = "", 0
    with _client(args) as client:
        print(args.prompt, end="", flush=True)
        for chunk in client.stream_text(args.model, args.prompt, args.max_new_tokens, **sampling):
            print(chunk.text, end="", flush=True)
            reason, seed = chunk.finish_reason, chunk.seed
    print(f"\n[finished: {reason}, seed {seed}]", file=sys.stderr)
    return 0


def cmd_classify(args: argparse.Namespace, settings: Settings | None = None) -> int:
    with _client(args) as client:
        predictions = client.classify_texts(args.model, args.texts, top_k=args.top_k)
    for text, top in zip(args.texts, predictions):
        labels = ", ".join(f"{label} {p:.3f}" for label, p in top)
        print(f"{labels}\t{text[:60]}")
    return 0


def cmd_import_hf(args: argparse.Namespace, settings: Settings) -> int:
    """Detect the checkpoint's architecture from config.json and publish it for serving."""
    from genserve.export.registry import import_hf

    try:
        path = import_hf(args.directory, settings.model_repository, args.name, data_path=args.data)
    except (ValueError, FileNotFoundError) as exc:  # the importers' "cannot serve this" errors
        print(f"import-hf: {exc}", file=sys.stderr)
        return 2
    print(f"published {path}")
    return 0


def cmd_health(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """grpc.health.v1 Check against the gateway: 0 when SERVING, 1 otherwise (NOT_SERVING while
    the broker is unreachable, or no answer at all)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from genserve.channels import channel as open_channel

    with open_channel(args.address, tls=args.tls, ca=args.ca, cert=args.cert, key=args.key) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


COMMANDS = {"serve": cmd_serve, "gateway": cmd_gateway, "worker": cmd_worker, "train": cmd_build,
            "export": cmd_build, "models": cmd_models, "import-hf": cmd_import_hf}
CLIENT_COMMANDS = {"generate": cmd_generate, "text": cmd_text, "classify": cmd_classify, "health": cmd_health,
                   "job": cmd_job}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    client_command = CLIENT_COMMANDS.get(args.command)
    if args.command == "models" and args.models_action:
        client_command = cmd_models_admin
    if client_command is not None:  # clients of a running gateway: no settings needed
        from genserve.rpc import GenserveRpcError

        try:
            return client_command(args)
        except GenserveRpcError as exc:  # the gateway's status and message, not a traceback
            print(f"genserve {args.command}: {exc}", file=sys.stderr)
            return 1
    settings = build_settings(args)
    _logging(settings)
    return COMMANDS[args.command](args, settings)


if __name__ == "__main__":
    sys.exit(main())
