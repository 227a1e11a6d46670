"""Import a user's Hugging Face GPT2LMHeadModel from a local directory into the GPT serving path.

    import_gpt2(Path("my-gpt2"), Path("model_repository"), "mygpt")

The directory is what `save_pretrained` writes: `config.json`, the weights
(`model.safetensors`, a sharded `model.safetensors.index.json`, or `pytorch_model.bin`) and
the tokenizer (`tokenizer.json`, or GPT-2's `vocab.json` + `merges.txt`); core/hf_weights.py
reads the config and weights. Nothing is
downloaded and `transformers` is not needed: GPT-2's architecture is exactly
`genserve.export.families.gpt.model.GPT` (pre-LN blocks, learned positions, tanh-GELU, tied head), so
the weights map name for name, Conv1D matrices transposed. Configurations that are not plain
GPT-2 (another activation, scaled attention per layer, cross-attention, an untied head) are
refused with a message rather than served wrongly. The model then goes through the same ONNX
export and parity check as a trained GPT; held-out metrics are measured on the first
IMPORT_EVAL_TOKENS tokens of the pydoc held-out documents, so models can be compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from genserve.export.core.hf_weights import (
    UnsupportedCheckpointError,
    read_hf_config,
    read_hf_weights,
)
from genserve.export.data.prose import load_corpus, split_documents
from genserve.export.families.gpt.build import HELDOUT_FRACTION, heldout_score, publish_gpt
from genserve.export.families.gpt.model import GPT, GPTConfig

IMPORT_EVAL_TOKENS = 8192  # held-out tokens scored at import: enough for 2 digits, quick for GPT-2 small
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def gpt_config(hf: dict[str, Any]) -> GPTConfig:
    """GPTConfig from a GPT2Config's JSON, refusing what GPT cannot reproduce exactly."""
    if hf.get("model_type") != "gpt2":
        raise UnsupportedCheckpointError(f"model_type must be 'gpt2', got {hf.get('model_type')!r}")
    checks = [
        (hf.get("activation_function", "gelu_new") in GELU_TANH, "activation_function must be gelu_new"),
        (not hf.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx is not supported"),
        (hf.get("scale_attn_weights", True), "scale_attn_weights=False is not supported"),
        (not hf.get("add_cross_attention", False), "cross-attention is not supported"),
        (hf.get("tie_word_embeddings", True), "an untied language-model head is not supported"),
    ]
    for ok, message in checks:
        if not ok:
            raise UnsupportedCheckpointError(message)
    return GPTConfig(
        vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"], n_head=hf["n_head"],
        n_embd=hf["n_embd"], n_inner=hf.get("n_inner") or 0, dropout=0.0,
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5), bias=True,
    )


def gpt_state_dict(hf_weights: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 names -> GPT's; Conv1D weights (in, out) become Linear's (out, in)."""
    weights = {k.removeprefix("transformer."): v for k, v in hf_weights.items()}
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    state = {}
    for name, tensor in weights.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # causal-mask buffers of old checkpoints; the head is tied to wte
        state[name] = tensor.t().contiguous() if name.endswith(conv1d) else tensor
    state["lm_head.weight"] = state["wte.weight"]
    return state


def load_tokenizer(hf_dir: Path, eos_token: str) -> Tokenizer:
    """tokenizer.json as saved, or GPT-2's vocab.json + merges.txt as byte-level BPE."""
    if (hf_dir / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    elif (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        tokenizer = Tokenizer(models.BPE.from_file(str(hf_dir / "vocab.json"), str(hf_dir / "merges.txt")))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    else:
        raise FileNotFoundError(f"no tokenizer.json (or vocab.json + merges.txt) in {hf_dir}")
    tokenizer.add_special_tokens([eos_token])  # an existing vocabulary entry keeps its id
    return tokenizer


def import_gpt2(hf_dir: Path, repo_root: Path, name: str, *, eval_tokens: int = IMPORT_EVAL_TOKENS) -> Path:
    """Publish a local GPT2LMHeadModel checkpoint as the next version of `name`; its directory."""
    hf_dir = Path(hf_dir)
    hf = read_hf_config(hf_dir)
    config = gpt_config(hf)
    model = GPT(config)
    missing, unexpected = model.load_state_dict(gpt_state_dict(read_hf_weights(hf_dir), config), strict=False)
    if missing or unexpected:
        raise UnsupportedCheckpointError(f"weights do not match GPT-2: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    eos_id = int(hf.get("eos_token_id", 50256))
    tokenizer = load_tokenizer(hf_dir, _eos_token(hf_dir, eos_id))
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise UnsupportedCheckpointError(
            f"the tokenizer has {tokenizer.get_vocab_size()} tokens, the model only {config.vocab_size}"
        )
    _, held_docs = split_documents(load_corpus(), HELDOUT_FRACTION, seed=0)
    score = heldout_score(model, tokenizer, held_docs, max_tokens=eval_tokens)
    training = {
        "source": f"Hugging Face GPT2LMHeadModel imported from {hf_dir.name}",
        "hf_config": {k: hf[k] for k in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size") if k in hf},
        "parameters": model.num_parameters(),
        "heldout": f"pydoc_data.topics held-out documents (the GPT's split), first {score.tokens} tokens",
    }
    description = f"GPT-2 imported from Hugging Face ({hf_dir.name}); serves GenerateText, CompleteText, ScoreText"
    return publish_gpt(repo_root, name, model, tokenizer, eos_id, score.metrics(), training,
                       description=description)


def _eos_token(hf_dir: Path, eos_id: int) -> str:
    """The end-of-text token's string, from the vocabulary files ("<|endoftext|>" for GPT-2)."""
    for candidate in ("tokenizer.json", "vocab.json"):
        path = hf_dir / candidate
        if path.is_file():
            vocab = json.loads(path.read_text())
            vocab = vocab.get("model", {}).get("vocab", vocab) if candidate == "tokenizer.json" else vocab
            for token, index in vocab.items():
                if index == eos_id:
                    return token
    return "<|endoftext|>"

