"""Fine-tuning a text classifier: batches of similar length, AdamW with warmup, checkpoints.

Texts are tokenised once with the serving tokenizer (genserve.tokenization), truncated at
`max_length` for training. The frozen embeddings and first blocks run once per text, without
dropout, and their output is cached: each step then runs only the trainable blocks. Batches
group texts of similar length (shuffle, sort within windows of WINDOW_BATCHES batches, shuffle
the batches) so little compute goes to padding, which on a CPU is most of the cost. The learning rate warms up linearly over the first
WARMUP of the steps and decays linearly to zero; it is a function of the step alone, so a run
resumed from its per-epoch checkpoint continues exactly where it stopped (batch order and
dropout are drawn from (seed, epoch) as in core/training.py). `genserve train textclf` then
`genserve export textclf` fine-tunes once: the export finds the finished checkpoint.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from genserve.export.core.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from genserve.export.core.training import autocast, epoch_generator, training_precision
from genserve.export.families.textclf.model import TextClassifier
from genserve.tokenization import TextEncoder, pad_batch

WARMUP = 0.1  # fraction of the steps with a rising learning rate
WINDOW_BATCHES = 16  # length grouping happens within windows of this many batches
WEIGHT_DECAY = 0.01


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-4  # high for BERT fine-tuning, right for a 3-epoch budget on a small encoder
    # Training truncation; a docstring's first sentences carry its topic. On the 2-core machine
    # (2026-11-30, held-out accuracy, fine-tuning seconds): 64 tokens 85.6% in 308 s (others on
    # the cores part of the time; ~260 s idle, estimated from step timings), 32 tokens 83.4% in
    # 162 s: the 5-minute build needs the shorter one (half the texts are longer than 32 tokens).
    max_length: int = 32
    # Embeddings and the first k blocks stay pretrained, computed once per text (frozen_features),
    # so an epoch runs only the last 6 - k blocks. 3 epochs this way beat 1 epoch of the whole
    # encoder (82.5% vs 76.7%); k = 4 lost 3.9 points (81.7%), 2 epochs instead of 3 lost 5.3.
    freeze_layers: int = 3
    seed: int = 0


@dataclass
class FinetuneResult:
    model: TextClassifier
    history: list[float] = field(default_factory=list)  # mean training loss per epoch (nats)
    resumed_from: int = 0
    seconds: float = 0.0
    precision: str = "fp32"  # core/training.py's training_precision


def length_grouped_batches(lengths: np.ndarray, batch_size: int, g: torch.Generator) -> list[np.ndarray]:
    """Index batches of similar length, in a random order drawn from `g`."""
    order = torch.randperm(len(lengths), generator=g).numpy()
    window = batch_size * WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def to_tensors(rows: list[np.ndarray], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    padded = pad_batch(rows, pad_id)
    return torch.from_numpy(padded["input_ids"]), torch.from_numpy(padded["attention_mask"])


def lr_at(step: int, total: int, base: float) -> float:
    warmup = max(1, int(WARMUP * total))
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, (total - step) / max(1, total - warmup))


def freeze(model: TextClassifier, layers: int) -> None:
    """Keep the embeddings and the first `layers` blocks at their pretrained weights."""
    if layers <= 0:
        return
    frozen = [model.encoder.embeddings, *model.encoder.blocks[:layers]]
    for module in frozen:
        module.requires_grad_(False)


def run_settings(model: TextClassifier, rows: list[np.ndarray], labels: np.ndarray,
                 settings: FinetuneSettings, start_sha256: str, precision: str) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed; the epochs too, as they shape the schedule."""
    data = hashlib.sha256(b"".join(r.tobytes() + b"|" for r in rows) + labels.tobytes()).hexdigest()
    return {"config": asdict(model.config), "data_sha256": data, "start_sha256": start_sha256,
            **asdict(settings), "precision": precision}


def finetune(
    model: TextClassifier,
    encoder: TextEncoder,
    texts: list[str],
    labels: np.ndarray,
    settings: FinetuneSettings,
    *,
    checkpoint_dir: Path | None = None,
    start_sha256: str = "",  # identifies the starting weights, so a checkpoint is not reused for others
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune `model` in place on (texts, labels); resumes from checkpoint_dir if it has one."""
    started = time.perf_counter()
    rows = [r[: settings.max_length] for r in encoder.encode(texts)]
    lengths = np.array([len(r) for r in rows])
    y = torch.from_numpy(labels.astype(np.int64))
    freeze(model, settings.freeze_layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=settings.lr, weight_decay=WEIGHT_DECAY)
    # bf16 autocast where the CPU has bf16: 103.7 -> 66.3 s of fine-tuning on one thread of a
    # 2-core AMD EPYC (AVX-512 BF16), held-out accuracy fp32 83.4% both, int8 82.9 -> 83.2%
    # (2026-12-06, the two builds side by side). The frozen blocks' features stay fp32.
    precision = training_precision()
    run = run_settings(model, rows, labels, settings, start_sha256, precision)
    path = checkpoint_path(checkpoint_dir)
    done, history = load_checkpoint(path, run, model, {"adamw": optimizer})
    inputs = frozen_features(model, rows, settings.freeze_layers) if done < settings.epochs else []
    steps_per_epoch = -(-len(rows) // settings.batch_size)
    total = settings.epochs * steps_per_epoch
    bar = tqdm(total=total, initial=min(done, settings.epochs) * steps_per_epoch,
               desc="fine-tune textclf", unit="step", disable=not progress)
    for epoch in range(done, settings.epochs):
        model.train()
        g = epoch_generator(settings.seed, epoch)
        batches = length_grouped_batches(lengths, settings.batch_size, g)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))  # dropout, per epoch
            loss_sum = run_epoch(model, optimizer, inputs, y, batches, epoch * steps_per_epoch, total, settings, bar,
                                 precision)
        history.append(loss_sum / len(rows))
        if path is not None:
            save_checkpoint(path, run, model, {"adamw": optimizer}, epoch + 1, history)
    bar.close()
    model.requires_grad_(True)
    model.eval()
    return FinetuneResult(model, history, done, time.perf_counter() - started, precision)


@torch.no_grad()
def frozen_features(model: TextClassifier, rows: list[np.ndarray], layers: int,
                    batch_size: int = 64) -> list[torch.Tensor]:
    """Each text's hidden states (T_i, C) entering block `layers`: the embeddings and the first
    `layers` blocks run once, in eval mode (no dropout), as their weights never change. The
    attention mask keeps a text's states independent of the padding of its batch (up to float
    rounding), so each is cut back to its own length. layers = 0: the ids themselves."""
    if layers <= 0:
        return [torch.from_numpy(r) for r in rows]
    encoder = model.encoder.eval()
    order = np.argsort([len(r) for r in rows], kind="stable")
    features: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    for start in range(0, len(rows), batch_size):
        idx = order[start : start + batch_size]
        input_ids, attention_mask = to_tensors([rows[i] for i in idx])
        hidden = encoder.run_blocks(encoder.embeddings(input_ids), attention_mask, 0, layers)  # (B, T, C)
        for j, i in enumerate(idx):
            features[i] = hidden[j, : len(rows[i])].clone()  # (T_i, C)
    return features


def forward_batch(model: TextClassifier, inputs: list[torch.Tensor], layers: int) -> torch.Tensor:
    """Logits (B, labels) of a batch of frozen_features, right-padded to the longest."""
    attention_mask = nn.utils.rnn.pad_sequence([torch.ones(len(x), dtype=torch.long) for x in inputs],
                                               batch_first=True)  # (B, T)
    padded = nn.utils.rnn.pad_sequence(inputs, batch_first=True)  # (B, T) ids or (B, T, C) states
    if layers <= 0:
        return model(padded, attention_mask)
    return model.forward_from(padded, attention_mask, layers)


def run_epoch(model: TextClassifier, optimizer: torch.optim.Optimizer, inputs: list[torch.Tensor],
              y: torch.Tensor, batches: list[np.ndarray], first_step: int, total: int,
              settings: FinetuneSettings, bar: tqdm, precision: str) -> float:
    """One pass over `batches` of frozen_features; returns the summed training loss (nats)."""
    loss_sum = 0.0
    for i, idx in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(first_step + i, total, settings.lr)
        with autocast(precision):
            logits = forward_batch(model, [inputs[j] for j in idx], settings.freeze_layers)
        loss = F.cross_entropy(logits.float(), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(idx)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.update(1)
    return loss_sum


@torch.no_grad()
def predict_torch(model: TextClassifier, rows: list[np.ndarray], batch_size: int = 16, pad_id: int = 0) -> np.ndarray:
    """Logits (N, num_labels) in input order; batches of similar length for speed."""
    model.eval()
    order = np.argsort([len(r) for r in rows], kind="stable")
    logits = np.zeros((len(rows), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(rows), batch_size):
        idx = order[start : start + batch_size]
        logits[idx] = model(*to_tensors([rows[i] for i in idx], pad_id)).numpy()
    return logits
