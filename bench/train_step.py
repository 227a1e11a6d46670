"""What a default GPT training step costs on this CPU: with and without keep_freed_memory,
and by window length (the sequence-length warm-up's short steps against full ones).

    .venv/bin/python -m bench.train_step [--rounds 3] [--steps 15] [--threads 2]

Each round runs both variants, one after the other, each in a fresh interpreter (the malloc
setting lasts for the process): the default GPTConfig, random tokens, the training loop's own
step (batch_windows, loss, AdamW, gradient clipping), 3 warm-up steps and then `--steps` timed
ones. Prints the median milliseconds a step over the rounds and the page faults of the timed
steps. Then, in one process keeping freed memory, rounds of 3 steps at each window length
(2,048 tokens a step: 4 x 512, 8 x 256, 16 x 128), interleaved, 2 x `--rounds` + 2 rounds.
The build's time is about DEFAULT_STEPS (gpt/train.py) of these plus 20-30 s of
tokenizer, scoring and export.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

PROGRAM = """
import json, resource, sys, time, torch
from genserve.export.core.training import keep_freed_memory
from genserve.export.families.gpt.model import GPT, GPTConfig
from genserve.export.families.gpt.train import DEFAULT_BATCH_SIZE, batch_windows
keep, steps, threads = sys.argv[1] == "keep", int(sys.argv[2]), int(sys.argv[3])
kept = keep_freed_memory() if keep else False
torch.set_num_threads(threads)
torch.manual_seed(0)
config = GPTConfig()
model = GPT(config).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
data = torch.randint(config.vocab_size, (500_000,))
g = torch.Generator().manual_seed(0)
def step(block=config.block_size):  # DEFAULT_BATCH_SIZE x block_size tokens, in windows of `block`
    x, y = batch_windows(data, block, DEFAULT_BATCH_SIZE * config.block_size // block, g)
    loss = model.loss(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
if sys.argv[4:] == ["windows"]:
    lengths = (config.block_size, config.block_size // 2, config.block_size // 4)
    times = {n: [] for n in lengths}
    for r in range(steps):
        for block in lengths:
            started = time.perf_counter()
            for _ in range(3):
                step(block)
            if r >= 2:  # the first two rounds warm up
                times[block].append((time.perf_counter() - started) / 3 * 1000)
    tokens = DEFAULT_BATCH_SIZE * config.block_size
    print(json.dumps({f"{n} x {tokens // n}": sorted(v)[len(v) // 2] for n, v in times.items()}))
    sys.exit()
for _ in range(3):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
started = time.perf_counter()
for _ in range(steps):
    step()
ms = (time.perf_counter() - started) / steps * 1000
print(json.dumps({"kept": kept, "ms": ms, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}))
"""

VARIANTS = {"glibc's default": "default", "keep_freed_memory": "keep"}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, mode in VARIANTS.items():
            out = subprocess.run([sys.executable, "-c", PROGRAM, mode, str(args.steps), str(args.threads)],
                                 check=True, capture_output=True, text=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"GPT training step, default config, {args.threads} threads, {cpu_name()}, "
          f"{os.cpu_count()} cores; {args.rounds} rounds of {args.steps} steps, median")
    print("| malloc | ms a step | page faults a step |")
    print("|---|---:|---:|")
    base = None
    for name, results in runs.items():
        ms = statistics.median(r["ms"] for r in results)
        faults = statistics.median(r["faults"] for r in results) / args.steps
        base = base or ms
        print(f"| {name} | {ms:.0f} ({base / ms:.2f}x) | {faults:,.0f} |")
    out = subprocess.run([sys.executable, "-c", PROGRAM, "keep", str(2 * args.rounds + 2), str(args.threads), "windows"],
                         check=True, capture_output=True, text=True)
    windows = json.loads(out.stdout.strip().splitlines()[-1])
    print()
    print("| window (tokens) x windows a step | ms a step (median) |")
    print("|---|---:|")
    full = next(iter(windows.values()))  # the full-length windows come first
    for shape, ms in windows.items():
        print(f"| {shape} | {ms:.0f} ({full / ms:.2f}x) |")


if __name__ == "__main__":
    main()
