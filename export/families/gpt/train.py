"""Training the GPT: AdamW on random windows of the token stream (half-length ones first),
warm-up + cosine, resumable.

Training is seeded and resumable: the windows of step s and its dropout noise come from
(seed, s) (`epoch_generator`), so a run stopped at a checkpoint (core/checkpoint.py, every
CHECKPOINT_EVERY steps) and resumed ends with the same weights.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from genserve.export.core.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from genserve.export.core.training import (
    FitResult,
    autocast,
    epoch_generator,
    init_module,
    keep_freed_memory,
    run_settings,
    training_precision,
)
from genserve.export.families.gpt.model import GPT, GPTConfig

DEFAULT_STEPS = 900  # about 4 passes over the 474k training tokens (topics + docstrings); 400 (two defaults ago) underfits
DEFAULT_BATCH_SIZE = 4  # windows of block_size tokens per step: 2,048 tokens
DEFAULT_LR = 2e-3  # peak; linear warm-up over WARMUP_FRACTION, cosine decay to 10%; 3e-3 diverged on seed 1 (2.07 bpb)
WARMUP_FRACTION = 0.05
WEIGHT_DECAY = 0.1
CHECKPOINT_EVERY = 50  # steps between checkpoints
# Sequence-length warm-up: the first SHORT_FRACTION of the steps train on twice as many
# half-length windows (the same 2,048 tokens a step). Measured with scripts/gpt_recipe.py
# (900 steps, seed 0, two threads, 2-core AMD EPYC with AVX2 only, 2026-12-03): held-out
# 1.870 bits per byte without it, 1.839 with 0.6, 1.838 with 0.8; a 256-token step costs
# 295 ms there against 342 for a 512-token one (the attention's cost is the square of the
# length). 700 steps with 0.7 gave 1.927.
SHORT_FRACTION = 0.8


def learning_rate(step: int, steps: int, peak: float) -> float:
    warmup = max(1, int(WARMUP_FRACTION * steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_windows(stream: torch.Tensor, block: int, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` random windows: inputs (B, T) and the next tokens (B, T)."""
    block = min(block, len(stream) - 1)
    starts = torch.randint(len(stream) - block, (batch,), generator=g)
    x = torch.stack([stream[s : s + block] for s in starts.tolist()])  # (B, T)
    y = torch.stack([stream[s + 1 : s + 1 + block] for s in starts.tolist()])  # (B, T)
    return x, y


def train_gpt(
    config: GPTConfig,
    stream: np.ndarray,
    *,
    steps: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    weight_decay: float = WEIGHT_DECAY,
    short_fraction: float = SHORT_FRACTION,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> FitResult:
    """AdamW on random windows of the token stream; resumes from checkpoint_dir if it has one."""
    started = time.perf_counter()
    keep_freed_memory()
    precision = training_precision()  # bf16 autocast where the CPU has bf16
    model = init_module(GPT, config, seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.99),
    )
    data = torch.from_numpy(stream)
    short_steps = int(short_fraction * steps)
    settings = run_settings(config, [stream], steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                            weight_decay=weight_decay, **({"short_steps": short_steps} if short_steps else {}),
                            precision=precision)  # a checkpoint resumes only in its own precision
    path = checkpoint_path(checkpoint_dir)
    done, history = load_checkpoint(path, settings, model, {"adamw": optimizer})
    model.train()
    bar = tqdm(total=steps, initial=min(done, steps), desc="train gpt", disable=not progress)
    for step in range(done, steps):
        g = epoch_generator(seed, step)
        if step < short_steps:  # attention costs the square of the length: half-length windows first
            x, y = batch_windows(data, config.block_size // 2, 2 * batch_size, g)
        else:
            x, y = batch_windows(data, config.block_size, batch_size, g)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))  # dropout noise of this step
            with autocast(precision):
                loss = model.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append(loss.item())
        if path is not None and ((step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == steps):
            save_checkpoint(path, settings, model, {"adamw": optimizer}, step + 1, history)
        bar.set_postfix(loss=f"{history[-1]:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    model.eval()
    return FitResult(model, history, done, time.perf_counter() - started, precision=precision)
