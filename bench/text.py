"""`python -m bench.text`: the GPT's serving targets, measured, printed as one table.

1. KV cache vs recomputing the prefix: greedy decoding of NEW_TOKENS tokens on ONNX Runtime,
   batch 1, with the cache (one token per step) and without (the whole prefix every step).
2. ONNX Runtime vs PyTorch eager per token: the same greedy decode with the cache, the same
   weights (published beside model.onnx), one thread each.
3. Iteration-level batching: the worker's DecodeScheduler in-process, 8 generations of
   NEW_TOKENS tokens (temperature 0.8) one after another (one stream) vs all at once:
   total tokens/s, medians over alternating rounds; with 1 ONNX Runtime thread and with the
   worker's default (the model's hint, else cores / worker processes). With --user-sized,
   the same for a GPT-2-small-shaped model (random weights): batching pays more where a
   step's weights, read once for all rows, outweigh each row's cached keys and values.
4. The service: Redis + `genserve worker` (its default threads) + `genserve gateway` as
   separate processes; the same with GenerateText streams through gRPC, and the time to
   first streamed token at concurrency 1 next to one prefill of the same prompt.

Rows 1-2 use --threads (default 1) for both systems. The CPU is shared with whatever else
runs: the table records the load average and the machine's cores; compare ratios, not
absolute numbers, across machines. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.workers.autoregressive.cache import CacheSpec, DecodeBatch, prefill_feeds
from genserve.workers.autoregressive.scheduler import DecodeScheduler, Sequence
from genserve.workers.runtime import LoadedModel, ModelCache, intra_op_threads
from genserve.tokenization import TextCodec

PROMPT = "The assert statement"
NEW_TOKENS = 256


def progress(message: str) -> None:
    print(f"[bench.text] {message}", file=sys.stderr, flush=True)


def best_of(runs: int, call: Callable[[], Any]) -> float:
    """Shortest wall time of `runs` calls after one warm-up (the least disturbed by other load)."""
    call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def ort_greedy(loaded: LoadedModel, ids: list[int], new: int, cache: bool) -> list[int]:
    """Greedy decoding on ONNX Runtime: with the worker's KV cache (DecodeBatch, one token per
    step), or recomputing the whole prefix every step."""
    spec, ids = CacheSpec.of(loaded.manifest.config), list(ids)
    out = loaded.onnx.run(prefill_feeds(ids, spec))
    batch = DecodeBatch(spec, 1)
    batch.add(Sequence(ids, None, new, None, None, None, False, None, 0.0), [out[n] for n in spec.names("present")])
    for _ in range(new):
        ids.append(int(out["logits"][0, -1].argmax()))
        if cache:
            batch.rows[0].last, batch.rows[0].length = ids[-1], len(ids) - 1
            out = loaded.onnx.run(batch.feeds())
            batch.append([out[n] for n in spec.names("present")])
        else:
            out = loaded.onnx.run(prefill_feeds(ids, spec))
    return ids


def torch_greedy(repository: ModelRepository, loaded: LoadedModel, ids: list[int], new: int, threads: int) -> Callable[[], Any] | None:
    try:
        import torch

        from genserve.export.core.publishing import load_published
    except ImportError:
        return None
    torch.set_num_threads(threads)
    model = load_published(repository, loaded.manifest).model
    idx = torch.tensor([ids])

    def run() -> Any:
        with torch.inference_mode():
            return model.generate(idx, new, temperature=0.0)

    return run


def scheduler_rates(loaded: LoadedModel, codec: TextCodec, ids: list[int], new: int, rounds: int) -> tuple[float, float]:
    """Tokens/s of one stream and of 8 concurrent ones through the worker's DecodeScheduler.

    Both generate the same 8 sequences (one after another, or all at once), alternating over
    `rounds` rounds; the medians are kept, so a burst of other load hits both alike.
    """
    scheduler = DecodeScheduler(loaded, codec, None)

    def one(seed: int) -> int:
        request = {"prompt_ids": ids, "max_new_tokens": new, "seed": seed, "temperature": 0.8}
        return len(scheduler.submit(request).result(600)["tokens"])

    def rate(concurrency: int) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            tokens = sum(pool.map(one, range(8)))
        return tokens / (time.perf_counter() - started)

    try:
        rate(8)  # warm-up
        rates = [(rate(1), rate(8)) for _ in range(rounds)]
    finally:
        scheduler.close()
    return statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


def scheduler_rows(repository: ModelRepository, ref: str, label: str, threads: set[int], ids: list[int], new: int,
                   rounds: int, provider: str = "cpu") -> list[tuple[str, str]]:
    """The scheduler's 1- and 8-stream rates for a model, at each thread count."""
    rows = []
    for count in sorted(threads):
        progress(f"{label}: 1 vs 8 streams, {count} ORT thread(s), {rounds} rounds")
        model = ModelCache(repository, WorkerSettings(execution_provider=provider, intra_op_threads=count)).get(ref)
        one, eight = scheduler_rates(model, TextCodec.load(model.directory, model.manifest), ids, new, rounds)
        rows += [(f"{label} ({count} thr): tokens/s, 1 stream", f"{one:.0f}"),
                 (f"{label} ({count} thr): tokens/s, 8 streams", f"{eight:.0f}  ({eight / one:.1f}x one stream)")]
    return rows


USER_SIZED = "gpt2-small-shape"


def user_sized_gpt(root: Path, tokenizer_dir: Path) -> str:
    """GPT-2 small's shape (12 layers, 768 wide, 12 heads, a 50,257-row vocabulary, 124M
    parameters) with random weights and the default GPT's tokenizer, published once through
    the Hugging Face import: the per-step cost of a user's own checkpoint. Its text is noise;
    only its speed is measured."""
    if (root / USER_SIZED).is_dir():
        return USER_SIZED
    import shutil
    import tempfile

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from genserve.export.families.gpt.hf import import_gpt2

    progress(f"building {USER_SIZED} (random weights) through the Hugging Face import")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(tokenizer_dir / "tokenizer.json", Path(tmp) / "tokenizer.json")
        torch.manual_seed(0)
        config = GPT2Config(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257,
                            eos_token_id=0, bos_token_id=0)
        GPT2LMHeadModel(config).save_pretrained(tmp)
        import_gpt2(Path(tmp), root, USER_SIZED, eval_tokens=256)
    return USER_SIZED


def service(args: argparse.Namespace, model: str, prefill_s: float) -> list[tuple[str, str]]:
    """Tokens/s at concurrency 1 and 8 and time to first token, through gRPC, Redis and a worker."""
    import grpc

    from bench.__main__ import Stack
    from genserve.v1 import inference_pb2, inference_pb2_grpc

    stack_args = argparse.Namespace(workers=1, provider=args.provider, threads=args.worker_threads, redis_url=args.redis_url,
                                    models=model)
    stack = Stack(args.repository, stack_args)
    try:
        address = stack.start_gateway(batching=True)
        with grpc.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)

            def stream(seed: int, new: int) -> tuple[float, int]:
                request = inference_pb2.GenerateTextRequest(model=model, prompt=PROMPT, max_new_tokens=new,
                                                            seed=seed, temperature=0.8)
                started, first, tokens = time.perf_counter(), None, 0
                for chunk in stub.GenerateText(request, timeout=600):
                    if first is None and chunk.tokens:
                        first = time.perf_counter() - started
                    tokens += len(chunk.tokens)
                return first or 0.0, tokens

            progress("service: waiting for the worker")
            deadline = time.monotonic() + 60
            while True:  # the worker takes a few seconds to start
                try:
                    stream(0, 4)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            progress(f"service: time to first token x {args.ttft_runs}")
            ttft = [stream(seed, 4)[0] for seed in range(args.ttft_runs)]
            rates: dict[int, list[float]] = {1: [], 8: []}
            for run in range(args.runs):  # 8 generations one after another, then all 8 at once
                progress(f"service: 1 vs 8 streams, round {run + 1} of {args.runs}")
                for concurrency in (1, 8):
                    started = time.perf_counter()
                    with ThreadPoolExecutor(concurrency) as pool:
                        tokens = sum(t for _, t in pool.map(lambda s: stream(s, args.new_tokens), range(8)))
                    rates[concurrency].append(tokens / (time.perf_counter() - started))
            rates = {c: statistics.median(r) for c, r in rates.items()}
    finally:
        stack.close()
    median = statistics.median(ttft)
    return [
        ("service: tokens/s, 1 stream", f"{rates[1]:.0f}"),
        ("service: tokens/s, 8 streams", f"{rates[8]:.0f}  ({rates[8] / rates[1]:.1f}x one stream)"),
        ("service: time to first token, conc. 1", f"{median * 1e3:.1f} ms median of {len(ttft)} "
         f"(p90 {np.percentile(ttft, 90) * 1e3:.1f}); one prefill {prefill_s * 1e3:.2f} ms; "
         f"difference {(median - prefill_s) * 1e3:.1f} ms"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path(os.environ.get("GENSERVE_MODEL_REPOSITORY", "model_repository")))
    parser.add_argument("--model", default="gpt")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime / torch threads")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"],
                        help="ONNX Runtime's execution provider for every ORT row and the service's worker")
    parser.add_argument("--worker-threads", type=int, default=0,
                        help="the service's worker: ONNX Runtime threads (default 0: the worker's own choice)")
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument("--runs", type=int, default=5, help="rounds of each timing (best kept for single timings, medians for rates)")
    parser.add_argument("--ttft-runs", type=int, default=30)
    parser.add_argument("--no-service", action="store_true", help="in-process measurements only")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private one")
    parser.add_argument("--user-sized", type=int, default=0, metavar="ROUNDS",
                        help=f"also the scheduler rows, over ROUNDS rounds, for {USER_SIZED}: GPT-2 small's shape "
                             "with random weights (built once into the repository; needs transformers)")
    args = parser.parse_args()

    repository = ModelRepository(args.repository)
    manifest = repository.resolve(args.model)
    loaded = ModelCache(repository, WorkerSettings(execution_provider=args.provider, intra_op_threads=args.threads)).get(manifest.ref)
    codec = TextCodec.load(loaded.directory, manifest)
    ids = codec.encode(PROMPT)
    new = min(args.new_tokens, manifest.config["block_size"] - len(ids))
    rows: list[tuple[str, str]] = [
        ("model", f"{manifest.ref}: {manifest.config['n_layer']} layers, {manifest.config['n_embd']} wide, "
                  f"vocab {manifest.config['vocab_size']}, context {manifest.config['block_size']}"),
        ("machine", f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, {args.threads} thread(s), "
                    f"ONNX Runtime on {loaded.onnx.provider}"),
    ]

    progress(f"ORT greedy with and without the KV cache, {new} tokens, best of {args.runs}")
    with_cache = best_of(args.runs, lambda: ort_greedy(loaded, ids, new, cache=True))
    without = best_of(args.runs, lambda: ort_greedy(loaded, ids, new, cache=False))
    rows += [("ORT greedy, KV cache", f"{with_cache / new * 1e3:.3f} ms/token ({new} tokens)"),
             ("ORT greedy, recompute prefix", f"{without / new * 1e3:.3f} ms/token"),
             ("KV cache speed-up", f"{without / with_cache:.1f}x")]
    progress("PyTorch eager greedy")
    eager = torch_greedy(repository, loaded, ids, new, args.threads) if args.provider == "cpu" else None  # CPU vs CPU only
    if eager is not None:
        eager_s = best_of(args.runs, eager)
        rows += [("PyTorch eager greedy, KV cache", f"{eager_s / new * 1e3:.3f} ms/token"),
                 ("ONNX Runtime vs eager", f"{eager_s / with_cache:.1f}x faster per token")]
    threads = {1, intra_op_threads(WorkerSettings(), manifest.serving.intra_op_threads)}
    rows += scheduler_rows(repository, manifest.ref, "scheduler", threads, ids, new, args.runs, args.provider)
    if args.user_sized:
        ref = user_sized_gpt(args.repository, loaded.directory)
        rows += scheduler_rows(repository, ref, f"{ref} scheduler", {1, intra_op_threads(WorkerSettings())}, ids, new,
                               args.user_sized, args.provider)
    prefill_s = best_of(20, lambda: loaded.onnx.run(prefill_feeds(ids, CacheSpec.of(manifest.config))))
    rows.append((f"ORT prefill, {len(ids)}-token prompt", f"{prefill_s * 1e3:.2f} ms"))
    if not args.no_service:
        args.new_tokens = new
        rows += service(args, args.model, prefill_s)
    progress("done")
    rows.append(("load average at end", f"{os.getloadavg()[0]:.1f}"))
    width = max(len(k) for k, _ in rows)
    print(f"{'measurement':<{width}}  value")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    threading.current_thread().name = "bench-text"
    main()
