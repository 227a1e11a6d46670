"""`genserve job submit|watch|get|list|cancel|fetch|verify`: batch jobs from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc


def add_parser(sub: Any, client_flags: Any) -> None:
    job = sub.add_parser("job", help="batch jobs: submit, watch, get, list, cancel, fetch, verify")
    actions = job.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="submit a generator job (--count) or an input-file job (--input/--upload)")
    submit.add_argument("model")
    submit.add_argument("--count", type=int, help="samples to generate (generator jobs)")
    submit.add_argument("--seed", type=int)
    submit.add_argument("--label", type=int)
    submit.add_argument("--chunk-size", type=int, default=0)
    submit.add_argument("--format", choices=["npy", "npz"], default="npy")
    submit.add_argument("--preview", action="store_true", help="also write preview.png")
    submit.add_argument("--input", help="input file, relative to the jobs volume")
    submit.add_argument("--upload", type=Path, help="local input file to upload first")
    submit.add_argument("--top-k", type=int, default=0)
    submit.add_argument("--max-new-tokens", type=int, default=0, help="text generation: for lines that set none (0: 64)")
    submit.add_argument("--token", default="", help="idempotency key")
    submit.add_argument("--watch", action="store_true", help="then follow its progress")
    for name in ("watch", "get", "cancel"):
        action = actions.add_parser(name)
        action.add_argument("id")
        client_flags(action)
    fetch = actions.add_parser("fetch", help="download a finished job and check every sha256")
    fetch.add_argument("id")
    fetch.add_argument("-o", "--output", type=Path, help="folder (default: ./<job id>)")
    listing = actions.add_parser("list")
    listing.add_argument("--state", default="", help="QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, ...")
    verify = actions.add_parser("verify", help="check a job folder's files against its manifest (no gateway)")
    verify.add_argument("folder", type=Path)
    for action in (submit, fetch, listing):
        client_flags(action)


def _watch(client: Any, job_id: str) -> int:
    from genserve.jobs.client import progress_line, state_name

    last = None
    for last in client.watch_job(job_id):
        print("\r" + progress_line(last).ljust(100), end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if last is not None and last.error:
        print(f"error: {last.error}", file=sys.stderr)
    return 0 if last is not None and state_name(last.state) in ("SUCCEEDED", "SUCCEEDED_WITH_ERRORS") else 1


def _submit(client: Any, args: argparse.Namespace) -> Any:
    if args.count:
        spec = {"model": args.model, "count": args.count, "chunk_size": args.chunk_size, "preview": args.preview,
                "format": 2 if args.format == "npz" else 1}
        spec.update({k: v for k, v in (("seed", args.seed), ("label", args.label)) if v is not None})
        return client.submit_job(generate_images=spec, client_token=args.token)
    spec = {"model": args.model, "chunk_size": args.chunk_size, "top_k": args.top_k, "max_new_tokens": args.max_new_tokens}
    if args.seed is not None:  # text generation: seeds of the lines that set none
        spec["seed"] = args.seed
    if args.upload:
        spec["upload_id"] = client.upload_input(args.upload).upload_id
    else:
        spec["input_path"] = args.input or ""
    return client.submit_job(input_file=spec, client_token=args.token)


def cmd_job(args: argparse.Namespace, settings: Any = None) -> int:
    from genserve.client import Client
    from genserve.jobs import layout
    from genserve.jobs.client import progress_line

    if args.action == "verify":
        problems = layout.verify(args.folder)
        for problem in problems:
            print(problem, file=sys.stderr)
        print("ok: every file matches the manifest" if not problems else f"{len(problems)} problems")
        return 1 if problems else 0
    with Client(args.address, timeout_s=args.timeout) as client:
        try:
            if args.action == "submit":
                job = _submit(client, args)
                print(job.id)
                return _watch(client, job.id) if args.watch else 0
            if args.action == "watch":
                return _watch(client, args.id)
            if args.action in ("get", "cancel"):
                job = client.get_job(args.id) if args.action == "get" else client.cancel_job(args.id)
                print(progress_line(job))
                if job.error:
                    print(f"error: {job.error}")
                return 0
            if args.action == "list":
                for job in client.list_jobs(args.state):
                    print(progress_line(job))
                return 0
            out = args.output or Path(args.id)
            manifest = client.fetch_job(args.id, out)
            print(f"fetched {len(manifest['files'])} files of {args.id} into {out}; every sha256 matches")
            return 0
        except grpc.RpcError as exc:
            print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
