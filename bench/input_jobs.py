"""Input-file jobs against the online path: a text-generation job of --prompts lines and a
text-classification job of --texts lines, each through gateway + Redis + one worker process,
beside the same kind of items sent online (CompleteText / Classify, one item a call) at
several concurrencies on the same stack. Prints items/s of each and the job's ratio to the
online path at its best concurrency.

    .venv/bin/genserve export gpt --repository R; .venv/bin/genserve export textclf --repository R
    .venv/bin/python -m bench.input_jobs --repository R [--prompts 20000] [--texts 100000]

The online rounds send --online items (a sample of the same lines) at each concurrency.
Items are prose from CPython's pydoc_data.topics: prompts are a sentence's first words,
texts whole sentences. Uses the Redis at --redis (db 13, its own queue prefix) and a
temporary jobs root, deleted after.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import grpc

from bench.jobs import job_stack, print_table, wait_done
from genserve.v1 import inference_pb2, inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc

CONCURRENCIES = (1, 8, 32, 64)


def sentences() -> list[str]:
    """Distinct prose sentences of 30..200 characters from the standard library's docs."""
    from pydoc_data.topics import topics

    out, seen = [], set()
    for text in topics.values():
        for raw in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if 30 <= len(raw) <= 200 and raw[0].isupper() and raw not in seen:
                seen.add(raw)
                out.append(raw)
    return out


def lines(kind: str, n: int, new_tokens: int) -> list[dict]:
    pool = sentences()
    rows = []
    for i in range(n):
        text = pool[i % len(pool)]
        if kind == "prompts":
            rows.append({"id": f"p{i}", "prompt": " ".join(text.split()[:4]), "max_new_tokens": new_tokens,
                         "temperature": 0.8, "seed": i})
        else:
            rows.append({"id": f"t{i}", "text": text})
    return rows


def online(call: Callable[[dict], None], items: list[dict], concurrency: int) -> float:
    """Items/s of `call` over `items` with `concurrency` callers."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in pool.map(call, items):
            pass
    return len(items) / (time.perf_counter() - started)


def job(jobs: jobs_pb2_grpc.JobServiceStub, root: Path, name: str, rows: list[dict], model: str,
        **spec: object) -> tuple[float, jobs_pb2.Job]:
    path = root / "inputs" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    started = time.perf_counter()
    submitted = jobs.SubmitJob(jobs_pb2.SubmitJobRequest(
        input_file=jobs_pb2.InputFileJob(model=model, input_path=f"inputs/{name}.jsonl", **spec)), timeout=600)
    final = wait_done(jobs, submitted.id)
    return len(rows) / (time.perf_counter() - started), final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--gpt", default="gpt")
    parser.add_argument("--textclf", default="textclf")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--prompts", type=int, default=20_000, help="lines of the text job (0: skip)")
    parser.add_argument("--texts", type=int, default=100_000, help="lines of the classification job (0: skip)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--online", type=int, default=1000, help="items of each online round")
    args = parser.parse_args()

    rows: list[tuple[str, str]] = []
    with job_stack(args.repository, args.redis) as (root, port, _, _):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])
        grpc.channel_ready_future(channel).result(timeout=60)
        stub, jobs = inference_pb2_grpc.InferenceServiceStub(channel), jobs_pb2_grpc.JobServiceStub(channel)
        if args.prompts:
            prompts = lines("prompts", args.prompts, args.new_tokens)

            def complete(row: dict) -> None:
                fields = {k: v for k, v in row.items() if k != "id"}
                stub.CompleteText(inference_pb2.GenerateTextRequest(model=args.gpt, **fields), timeout=600)

            complete(prompts[0])  # loads the model
            best = max((online(complete, prompts[: args.online], c), c) for c in CONCURRENCIES)
            rate, final = job(jobs, root, "prompts", prompts, args.gpt)
            state = jobs_pb2.JobState.Name(final.state)
            rows += [(f"CompleteText online, {args.online} prompts, best concurrency ({best[1]}), prompts/s", f"{best[0]:,.1f}"),
                     (f"text job, {args.prompts:,} prompts x {args.new_tokens} tokens ({final.chunks_total} chunks, {state}), prompts/s",
                      f"{rate:,.1f}"),
                     ("text job / online best", f"{rate / best[0]:.2f}x")]
        if args.texts:
            texts = lines("texts", args.texts, 0)

            def classify(row: dict) -> None:
                stub.Classify(inference_pb2.ClassifyRequest(model=args.textclf, texts=[row["text"]]), timeout=600)

            classify(texts[0])
            best = max((online(classify, texts[: args.online], c), c) for c in CONCURRENCIES)
            rate, final = job(jobs, root, "texts", texts, args.textclf)
            state = jobs_pb2.JobState.Name(final.state)
            rows += [(f"Classify online (1 text a call), {args.online} texts, best concurrency ({best[1]}), texts/s", f"{best[0]:,.1f}"),
                     (f"classification job, {args.texts:,} texts ({final.chunks_total} chunks, {state}), texts/s", f"{rate:,.1f}"),
                     ("classification job / online best", f"{rate / best[0]:.2f}x")]
    print_table("", rows, 10)

if __name__ == "__main__":
    main()
