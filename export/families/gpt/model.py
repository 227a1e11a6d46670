"""A decoder-only transformer (GPT) with a key/value cache, nanoGPT-style.

Read top to bottom: config, causal self-attention (which takes and returns the cache), MLP,
block, the model with its training loss, the serving wrapper that ONNX exports, then the spec.
The architecture is GPT-2's (pre-LayerNorm blocks, learned positions, tanh-GELU, a language
model head tied to the token embedding), so a Hugging Face GPT2LMHeadModel maps onto it
weight for weight (`genserve.export.families.gpt.hf.import_gpt2`).

The serving graph is one ONNX graph for prefill and decode steps alike:

    input_ids (B, T) int64, attention_mask (B, P+T) int64, position_ids (B, T) int64,
    past_key_i, past_value_i (B, H, P, D) float32 for each layer i
      ->  logits (B, T, V), present_key_i, present_value_i (B, H, T, D): the new tokens' only

Prefill passes an empty past (P = 0) and the whole prompt; a decode step passes the cache and
one token per row. The graph never copies the cache: attention scores the cached keys and the
new ones separately (a copy of the whole cache per step, which concatenating them costs,
dominated decode time at 8 rows), and the worker writes the new keys and values in place
into a buffer it grows in blocks, feeding the rows in use as a contiguous view. Rows of a batch may have different
lengths and the buffer unused columns: `attention_mask` zeroes both, and `position_ids`
count each row's real tokens, so padding never shifts a position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genserve.export.core.spec import GraphSpec, ModelSpec
from genserve.protocol import Loop

KV = tuple[torch.Tensor, torch.Tensor]  # one layer's keys and values, (B, H, P, D) each


@dataclass
class GPTConfig:
    vocab_size: int = 4096  # byte-level BPE on the training prose (export/data/prose.py); 2048 / 1024 / 512 measured worse
    block_size: int = 512  # context length: prompt + generated tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_inner: int = 0  # MLP width; 0 means 4 * n_embd (GPT-2)
    dropout: float = 0.0  # embeddings and residual branches, training only; with the docstrings 4 passes do not overfit
    layer_norm_eps: float = 1e-5
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.n_inner or 4 * self.n_embd


class CausalSelfAttention(nn.Module):
    """Multi-head attention over the cached keys/values plus the new tokens."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(
        self, x: torch.Tensor, past: KV | None = None, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, KV]:
        """x (B, T, C); past keys and values (B, H, P, D) each, with bias (B, 1, T, P+T) additive
        (0 or very negative); or neither, for plain causal attention.

        Returns the output (B, T, C) and the new tokens' keys and values (B, H, T, D): the
        caller appends them to its cache (the worker writes them in place into a buffer).
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        if past is None:  # training and scoring: fused causal attention (no dropout on the
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # weights: slow on CPU)
        else:  # serving: cached and new keys scored apart, so the cache is read, never copied
            q = q * (1.0 / math.sqrt(q.shape[-1]))
            att = torch.cat([q @ past[0].transpose(-2, -1), q @ k.transpose(-2, -1)], dim=-1)  # (B, H, T, P+T)
            w = F.softmax(att + bias, dim=-1)
            cached = past[0].shape[2]
            y = w[..., :cached] @ past[1] + w[..., cached:] @ v  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.c_proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width, bias=config.bias)
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's "gelu_new"


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, past: KV | None = None, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, KV]:
        h, present = self.attn(self.ln_1(x), past, bias)
        x = x + self.drop(h)
        x = x + self.drop(self.mlp(self.ln_2(x)))
        return x, present


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past: list[KV] | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[KV]]:
        """idx (B, T) -> logits (B, T, V) and each layer's new keys and values (B, H, T, D).

        Without position_ids the tokens sit at 0..T-1; without past and bias attention is
        plainly causal (training, scoring).
        """
        B, T = idx.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=idx.device).unsqueeze(0)  # (1, T)
        x = self.drop(self.wte(idx) + self.wpe(position_ids))  # (B, T, C)
        presents = []
        for i, block in enumerate(self.h):
            x, present = block(x, None if past is None else past[i], bias)
            presents.append(present)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, presents

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per token of predicting targets (B, T) from idx (B, T)."""
        logits, _ = self(idx)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue idx (B, T) by max_new_tokens with the cache; temperature 0 is greedy.

        PyTorch-side reference only (sample texts at export, the eager baseline of the
        benchmark); serving decodes in the worker on ONNX Runtime.
        """
        logits, past = self(idx)  # prefill: (B, T, V) and per layer keys, values (B, H, T, D)
        for _ in range(max_new_tokens):
            logits = logits[:, -1, :]  # (B, V): the next token's scores
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)  # (B, T+1)
            if idx.shape[1] >= self.config.block_size:
                break
            position = torch.full_like(nxt, idx.shape[1] - 1)  # (B, 1)
            logits, new = self(nxt, position, past, torch.zeros(1, 1, 1, idx.shape[1]))
            past = append_cache(past, new)
        return idx


def attention_bias(padding_mask: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """(B, P+T) ones/zeros over cache + new tokens -> (B, 1, T, P+T) additive attention bias.

    New token t sits at cache index P+t and may see key j when j <= P+t and j is not padding
    (bias 0); everything else gets the most negative float32, so softmax gives it exactly 0
    and a row with nothing to see (never produced by the worker) stays finite.
    """
    total = padding_mask.shape[1]
    past = total - new_tokens
    keys = torch.arange(total, device=padding_mask.device)  # (P+T,)
    queries = torch.arange(new_tokens, device=padding_mask.device) + past  # (T,)
    causal = keys.unsqueeze(0) <= queries.unsqueeze(1)  # (T, P+T)
    visible = causal.unsqueeze(0).unsqueeze(0) & padding_mask.bool().unsqueeze(1).unsqueeze(2)  # (B, 1, T, P+T)
    return torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)


class GPTWithCache(nn.Module):
    """The serving graph: (input_ids, attention_mask, position_ids, past_key_0, past_value_0,
    ...) -> (logits, present_key_0, present_value_0, ...)."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        bias = attention_bias(attention_mask, input_ids.shape[1])  # (B, 1, T, P+T)
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, presents = self.model(input_ids, position_ids, pairs, bias)
        return (logits, *(t for kv in presents for t in kv))


def append_cache(past: list[KV], new: list[KV]) -> list[KV]:
    """Each layer's cache with the new tokens' keys and values appended (PyTorch side)."""
    return [(torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)) for (pk, pv), (k, v) in zip(past, new)]


def cache_names(config: GPTConfig, prefix: str) -> list[str]:
    """["<prefix>_key_0", "<prefix>_value_0", ...]: the graph's cache inputs or outputs."""
    return [f"{prefix}_{part}_{i}" for i in range(config.n_layer) for part in ("key", "value")]


def empty_past(config: GPTConfig, batch: int, length: int = 0) -> list[torch.Tensor]:
    """Keys and values of `length` cached positions (zeros) for every layer, (B, H, length, D) each."""
    return [torch.zeros(batch, config.n_head, length, config.head_dim) for _ in range(2 * config.n_layer)]


def gpt_graphs(model: nn.Module) -> dict[str, GraphSpec]:
    """The serving graph "model": a decode step over a random ragged cache (prefill is P = 0)."""
    c: GPTConfig = model.config

    def inputs(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        past_len, new = 5, 3  # traced with both P and T > 1 so neither is specialised away
        mask = torch.ones(batch, past_len + new, dtype=torch.int64)
        mask[0, :2] = 0  # row 0 left-padded by two positions
        positions = (mask.cumsum(1) - 1).clamp(min=0)[:, past_len:]  # (B, T): real tokens before each
        cache = {name: torch.randn(batch, c.n_head, past_len, c.head_dim, generator=g) for name in cache_names(c, "past")}
        return {
            "input_ids": torch.randint(c.vocab_size, (batch, new), generator=g),
            "attention_mask": mask,
            "position_ids": positions,
            **cache,
        }

    outputs = ("logits", *cache_names(c, "present"))
    return {"model": GraphSpec(GPTWithCache(model), inputs, outputs)}


GPT_SPEC = ModelSpec(
    kind="gpt",
    loop=Loop.AUTOREGRESSIVE.value,
    config_class=GPTConfig,
    build=GPT,
    graphs=gpt_graphs,
    description="decoder-only transformer (GPT-2 architecture) with a key/value cache; "
    "byte-level BPE; serves GenerateText, CompleteText, ScoreText",
)
