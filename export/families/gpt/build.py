"""Build a GPT version end to end: corpus -> split -> tokenizer -> train -> evaluate -> export.

`build_gpt` is what `genserve export gpt` runs (train.py trains); `hf.import_gpt2` publishes a
user's Hugging Face GPT2LMHeadModel through `publish_gpt`, the same export, parity check and
manifest.

The default model (4 layers, 128 wide, 512-token context, 4,096-token vocabulary, no dropout)
trains for DEFAULT_STEPS = 900 steps of 2,048 tokens at a peak learning rate of 2e-3 on the
training topics plus the standard library's docstrings (export/data/prose.py; about 4 passes
over 474k tokens), the first 80% of them on 256-token windows (train.py SHORT_FRACTION).
Held-out 1.838 bits per byte (seed 0, two threads; scripts/gpt_recipe.py, 2026-12-03, 2-core
AMD EPYC with AVX2 only: 288 s of training), against 1.870 with 512-token windows throughout
and 1.933 for the default before that (vocabulary 2,048, dropout 0.1, 1,200 steps on the
topics alone). The 4-minute build target holds on the 2-core AVX-512 machines and not on the
AVX2-only ones (README, GPT section). PREVIOUS_GPT for PREVIOUS_STEPS is an older default
(2.17 bits per byte).

Held-out metrics are computed the way ScoreText computes them (`score_windows`): per held-out
document, every token after the first, in windows of the context length that overlap by half,
summed over documents: nats per token and bits per UTF-8 byte.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
import torch
import torch.nn.functional as F

from genserve.export.core.options import BuildOptions, RunOptions
from genserve.export.core.publishing import TOKENIZER, WEIGHTS, precision_record, publish_version, save_weights
from genserve.export.data.prose import (
    EOS,
    Document,
    describe_corpus,
    describe_docstrings,
    encode_stream,
    load_corpus,
    split_documents,
    train_tokenizer,
    training_prose,
)
from genserve.export.families.gpt.export import export_gpt
from genserve.export.families.gpt.model import GPT, GPT_SPEC, GPTConfig
from genserve.export.families.gpt.train import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LR,
    DEFAULT_STEPS,
    WEIGHT_DECAY,
    train_gpt,
)
from genserve.repository import ServingHints, sha256_file
from genserve.scoring import score_windows

HELDOUT_FRACTION = 0.1
# The previous default: `build_gpt(root, config=PREVIOUS_GPT, steps=PREVIOUS_STEPS)`.
PREVIOUS_GPT = GPTConfig(vocab_size=1024, dropout=0.0)
PREVIOUS_STEPS = 400
SAMPLES = "samples.txt"
SAMPLE_PROMPTS = ("The ", "A list comprehension", "If the")
# Concurrent sequences in one decode step: the default 1M-parameter model's step costs about
# 2x at 8 rows and 4x at 16 rows what it costs at one (160 cached tokens, one thread).
SERVING = ServingHints(max_batch_size=16)
# Decode steps of a model this narrow are hundreds of tiny ONNX Runtime kernels: a second
# thread costs more to wake than it saves. Measured (ms per step at 1 / 8 rows, 160 cached
# tokens, 2-core AMD EPYC with AVX-512): 128 wide x 4 layers 0.16 / 0.34 on one thread,
# 0.23 / 0.47 on two; 256 x 6: 0.68 / 2.44 vs 0.97 / 2.24; 512 x 8: 3.34 / 9.08 vs 3.03 / 6.41.
SINGLE_THREAD_MAX_WIDTH = 128


def serving_hints(config: GPTConfig) -> ServingHints:
    """Batching and threads for a GPT of this size (the worker's settings may override them)."""
    threads = 1 if config.n_embd <= SINGLE_THREAD_MAX_WIDTH else 0
    return SERVING.model_copy(update={"intra_op_threads": threads})


@dataclass(frozen=True)
class HeldoutScore:
    nats: float  # summed negative log-likelihood
    tokens: int  # scored tokens
    bytes: int  # UTF-8 bytes of the scored texts

    def metrics(self) -> dict[str, float]:
        return {
            "heldout_nats_per_token": self.nats / max(self.tokens, 1),
            "heldout_bits_per_byte": self.nats / math.log(2) / max(self.bytes, 1),
            "heldout_tokens": float(self.tokens),
            "heldout_bytes": float(self.bytes),
        }


@torch.no_grad()
def score_ids(model: GPT, ids: list[int]) -> float:
    """Negative log-likelihood in nats of ids[1:] given what precedes each (ScoreText's windows)."""
    total = 0.0
    for start, end, first in score_windows(len(ids), model.config.block_size):
        window = torch.tensor(ids[start:end])[None]  # (1, W)
        logits, _ = model(window)
        logp = F.log_softmax(logits[0, first - start - 1 : end - start - 1].double(), dim=-1)  # (N, V)
        targets = window[0, first - start : end - start]  # (N,)
        total -= logp.gather(1, targets[:, None]).sum().item()
    return total


def heldout_score(
    model: GPT, tokenizer: tokenizers.Tokenizer, docs: list[Document], max_tokens: int | None = None
) -> HeldoutScore:
    """Summed over held-out documents: nats, scored tokens (all but each first), UTF-8 bytes.

    With `max_tokens`, documents are scored in order until that many tokens were scored (the
    last one cut at a token boundary; its bytes are the bytes of the tokens kept).
    """
    model.eval()
    nats, tokens, size = 0.0, 0, 0
    for doc in docs:
        if max_tokens is not None and tokens >= max_tokens:
            break
        ids, text_bytes = tokenizer.encode(doc.text).ids, len(doc.text.encode())
        if max_tokens is not None and tokens + len(ids) - 1 > max_tokens:
            ids = ids[: max_tokens - tokens + 1]
            text_bytes = len(tokenizer.decode(ids).encode())
        if len(ids) < 2:
            continue
        nats += score_ids(model, ids)
        tokens += len(ids) - 1
        size += text_bytes
    return HeldoutScore(nats, tokens, size)


def sample_texts(model: GPT, tokenizer: tokenizers.Tokenizer, seed: int, new_tokens: int = 60) -> str:
    """A few seeded continuations of fixed prompts (temperature 0.8, top-k 40) for the card."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for prompt in SAMPLE_PROMPTS:
        idx = torch.tensor([tokenizer.encode(prompt).ids])
        out = model.generate(idx, new_tokens, temperature=0.8, top_k=40, generator=g)
        parts.append(f"--- prompt: {prompt!r}\n{tokenizer.decode(out[0].tolist(), skip_special_tokens=False)}\n")
    return "\n".join(parts)


def build_gpt(
    repo_root: Path,
    *,
    name: str = "gpt",
    config: GPTConfig | None = None,
    steps: int = DEFAULT_STEPS,
    epochs: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    run: RunOptions = RunOptions(),
) -> Path:
    """Train, evaluate, export and publish the next version of `name`; returns its directory.

    `epochs`, when given, replaces `steps`: that many passes over the training tokens.
    `limit` keeps a seeded subset of that many documents (quick runs, tests). With
    `train_only` the model is trained and checkpointed, nothing is published.
    """
    started = time.perf_counter()
    seed, data_path, limit = run.seed, run.data_path, run.limit
    config = config or GPTConfig()
    docs = load_corpus(data_path)
    if limit is not None and limit < len(docs):
        keep = sorted(np.random.default_rng(seed).permutation(len(docs))[:limit].tolist())
        docs = [docs[i] for i in keep]
    train_docs, held_docs = split_documents(docs, HELDOUT_FRACTION, seed)
    extra_docs = training_prose(data_path, limit)  # training only: the held-out split stays the corpus's
    train_docs = train_docs + extra_docs
    tokenizer = train_tokenizer([d.text for d in train_docs], config.vocab_size)
    config = replace(config, vocab_size=tokenizer.get_vocab_size())  # a small corpus may stop short
    stream = encode_stream(tokenizer, train_docs)
    if epochs is not None:
        steps = max(1, math.ceil(epochs * len(stream) / (batch_size * config.block_size)))
    result = train_gpt(config, stream, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                       checkpoint_dir=run.checkpoint_dir, progress=run.progress)
    if run.train_only:
        return run.trained(repo_root)
    score = heldout_score(result.model, tokenizer, held_docs)
    training = {
        "dataset": describe_corpus(data_path, docs),
        **({"training_only_prose": describe_docstrings(extra_docs)} if extra_docs else {}),
        "n_train_documents": len(train_docs),
        "n_heldout_documents": len(held_docs),
        "heldout_documents": [d.name for d in held_docs],
        "heldout_split": f"whole documents, {HELDOUT_FRACTION:.0%} of the bytes, seed {seed}",
        "train_tokens": int(len(stream)),
        "tokenizer": f"byte-level BPE, {tokenizer.get_vocab_size()} tokens, trained on the training documents",
        "steps": len(result.history),
        "resumed_from_step": result.resumed_from,
        "batch_size": batch_size,
        "tokens_per_step": batch_size * config.block_size,
        "lr": lr,
        "optimizer": f"AdamW (weight decay {WEIGHT_DECAY}), warm-up + cosine",
        "precision": precision_record(result.precision),
        "seed": seed,
        "parameters": result.model.num_parameters(),
        "seconds": round(result.seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "final_train_loss_nats": float(np.mean(result.history[-20:])) if result.history else None,
    }
    samples = sample_texts(result.model, tokenizer, seed)
    path = publish_gpt(repo_root, name, result.model, tokenizer, tokenizer.token_to_id(EOS), score.metrics(),
                       training, samples)
    if run.progress:
        metrics = score.metrics()
        print(f"{name}: held-out {metrics['heldout_nats_per_token']:.3f} nats/token, "
              f"{metrics['heldout_bits_per_byte']:.3f} bits/byte; built in {time.perf_counter() - started:.0f} s")
    return path


def publish_gpt(
    repo_root: Path,
    name: str,
    model: GPT,
    tokenizer: tokenizers.Tokenizer,
    eos_token_id: int,
    metrics: dict[str, float],
    training: dict[str, Any],
    samples: str = "",
    description: str = GPT_SPEC.description,
) -> Path:
    """Export with parity, write tokenizer + weights + samples beside it, publish the next version."""
    with tempfile.TemporaryDirectory(prefix="genserve-export-") as tmp:
        exported = export_gpt(model, Path(tmp))
        tokenizer_path = Path(tmp) / TOKENIZER
        tokenizer.save(str(tokenizer_path))
        weights = save_weights(GPT_SPEC, model, Path(tmp) / WEIGHTS)
        extra = {TOKENIZER: tokenizer_path, WEIGHTS: weights}
        if samples:
            (Path(tmp) / SAMPLES).write_text(samples)
            extra[SAMPLES] = Path(tmp) / SAMPLES
        preprocess = {  # the tokenizer file and its end-of-text id
            "tokenizer": TOKENIZER,
            "tokenizer_sha256": sha256_file(tokenizer_path),
            "tokenizer_type": "byte-level BPE (tokenizers)",
            "eos_token_id": eos_token_id,  # stops generation; also the start token of an empty prompt
            "context": model.config.block_size,
        }
        return publish_version(
            repo_root, name, GPT_SPEC, model, exported.paths, extra, parity=exported.parity,
            description=description, tools={"tokenizers": tokenizers.__version__}, preprocess=preprocess,
            training=training, metrics=metrics, serving=serving_hints(model.config),
        )


def build(options: BuildOptions) -> Path:
    """The GPT on the pydoc prose (or --data text files); --epochs counts passes over the tokens."""
    return build_gpt(options.repo_root, name=options.name, epochs=options.epochs, run=options.run)
