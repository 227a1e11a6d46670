"""The one resumable training loop, shared by the VAE, the denoiser, the digit classifier and the GANs.

The family gives a model, its optimizers and a `step(batch indices, generator)` returning its
losses; this loop shuffles, steps, shows the running losses on a progress bar, and writes a
checkpoint (checkpoint.py) after every epoch. Every source of randomness comes from
(seed, epoch): initial weights from `init_module`, and per epoch one generator
(`epoch_generator`) for the batch order and whatever noise the step draws. A run stopped after
epoch k and resumed from its checkpoint ends with the same weights as a run that never stopped.
The GPT's step loop and the text classifier's fine-tuning keep their own loops but use the same
generators and checkpoints.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from genserve.export.core.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint

# (batch indices (B,), the epoch's generator) -> {loss name: value} for the progress bar
Step = Callable[[torch.Tensor, torch.Generator], dict[str, float]]


@dataclass
class FitResult:
    """A trained model and how it got there (the GPT's loop counts steps where this says epochs)."""

    model: nn.Module
    history: list[Any] = field(default_factory=list)  # per epoch: {loss name: mean}; the GPT: loss per step
    resumed_from: int = 0  # epochs already done when this call started
    seconds: float = 0.0  # wall time of this call
    precision: str = "fp32"  # training_precision: "bf16" when the forward passes ran under bf16 autocast


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BELOW = 1 << 30  # allocations smaller than this come from (and go back to) the heap
_TRIM_ABOVE = 2**31 - 1  # free memory at the heap's top is given back only above this (C int max)


def keep_freed_memory() -> bool:
    """Let this process reuse the memory of freed tensors instead of mapping it anew.

    glibc serves an allocation above its mmap threshold (at most 32 MiB) with a fresh mapping
    and unmaps it when freed, so a training step that allocates the same large tensors each
    time (the GPT's 2,048 x 4,096 logits are exactly 32 MiB) takes a page fault per 4 KiB of
    each, every step. Raising the mmap and trim thresholds keeps that memory in the heap for
    the next step. Measured by `python -m bench.train_step` (see the README's GPT section):
    about 1.3x faster GPT steps on an AVX2-only AMD EPYC. The cost: a training process keeps
    its peak memory until it exits. Returns False where there is no glibc (macOS, musl):
    nothing changes there.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE))


PRECISION_ENV = "GENSERVE_TRAIN_PRECISION"  # auto (default), fp32 or bf16


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX), where oneDNN's
    bf16 matmuls and convolutions run faster than fp32; on AVX2 alone bf16 is emulated, slower."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def training_precision() -> str:
    """"bf16" (autocast: matmuls and convolutions in bfloat16, weights, optimizer state and
    reductions in fp32) or "fp32": GENSERVE_TRAIN_PRECISION, by default "auto", which takes
    bf16 where the CPU has it natively (native_bf16). Measured per step on one thread of a
    2-core AMD EPYC with AVX-512 BF16 (2026-12-06): the gan 116 -> 77 ms, the GPT 300 -> 218 ms."""
    value = os.environ.get(PRECISION_ENV, "auto").strip().lower()
    if value not in ("auto", "fp32", "bf16"):
        raise ValueError(f"{PRECISION_ENV}={value!r}: expected auto, fp32 or bf16")
    if value == "auto":
        return "bf16" if native_bf16() else "fp32"
    return value


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's context for `precision` (training_precision): bf16 autocast or nothing."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator private to one epoch (or step) of one seed, so resuming needs no saved RNG state."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def init_module(build: Callable[[Any], nn.Module], config: Any, seed: int) -> nn.Module:
    """A fresh module whose initial weights depend on `seed` only; global RNG state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(config)


def run_settings(config: Any, data: list[np.ndarray], **knobs: Any) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (the epoch count may grow)."""
    digest = hashlib.sha256()
    for array in data:
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"config": asdict(config), "data_sha256": digest.hexdigest(), **knobs}


def fit(
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    step: Step,
    n: int,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    settings: dict[str, Any],
    checkpoint_dir: Path | None,
    desc: str,
    progress: bool = True,
    drop_last: bool = True,
) -> FitResult:
    """Train for `epochs` epochs in total over n examples, resuming from checkpoint_dir.

    With `drop_last` batches are full (the last partial one of an epoch is dropped; the next
    epoch reshuffles), so batch norm never sees a batch of one; without it (the VAE) every
    example is seen each epoch. An epoch's loss is the mean over its examples. A checkpoint
    that already holds `epochs` or more epochs is returned as it is.
    """
    started = time.perf_counter()
    keep_freed_memory()
    path = checkpoint_path(checkpoint_dir)
    done, history = load_checkpoint(path, settings, model, optimizers)
    batch_size = min(batch_size, n)
    steps = n // batch_size if drop_last else -(-n // batch_size)
    bar = tqdm(total=epochs * steps, initial=min(done, epochs) * steps, desc=desc,
               disable=not progress)
    for epoch in range(done, epochs):
        model.train()
        g = epoch_generator(seed, epoch)
        order = torch.randperm(n, generator=g)
        sums: dict[str, float] = {}  # loss x batch size, so a short last batch weighs less
        seen = 0
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            for name, value in step(idx, g).items():
                sums[name] = sums.get(name, 0.0) + value * len(idx)
            seen += len(idx)
            if i % 10 == 0 or i == steps - 1:
                bar.set_postfix({k: f"{v / seen:.3f}" for k, v in sums.items()}, refresh=False)
            bar.update(1)
        history.append({name: total / seen for name, total in sums.items()})
        if path is not None:
            save_checkpoint(path, settings, model, optimizers, epoch + 1, history)
    bar.close()
    model.eval()
    return FitResult(model, history, done, time.perf_counter() - started)
