"""Tokenizers every process shares: the gateway counts tokens, workers serve, export measures.

- `TextCodec`: a text generator's byte-level BPE tokenizer with each token's bytes, so the
  worker decodes streamed text incrementally and the gateway bounds a prompt's token count
  before tokenizing it.
- `TextEncoder` and `pad_batch`: a text classifier's tokenizer (truncating, never padding by
  itself) and the per-batch padding both the worker and the export's scoring use.

Pure: `tokenizers` and numpy only (no ONNX Runtime, no Celery, no torch).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from genserve.errors import ModelNotReadyError
from genserve.repository import Manifest, sha256_file


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for bytes (what byte-level BPE vocabularies spell) -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class TextCodec:
    """A byte-level BPE tokenizer with each token's bytes, for incremental decoding."""

    def __init__(self, tokenizer: Any, eos_token_id: int, model_vocab_size: int = 0) -> None:
        spec = json.loads(tokenizer.to_str())
        if (spec.get("decoder") or {}).get("type") != "ByteLevel":
            raise ModelNotReadyError("the tokenizer must be byte-level BPE (a ByteLevel decoder)")
        self.tokenizer = tokenizer
        self.eos = eos_token_id
        # A model may have more rows than its tokenizer has tokens (padded vocabularies):
        # those ids decode to nothing.
        self.vocab_size = max(tokenizer.get_vocab_size(), model_vocab_size)
        special = {t["id"]: t["content"] for t in spec.get("added_tokens", [])}
        table = _byte_decoder()
        self.token_bytes: list[bytes] = []
        for i in range(self.vocab_size):
            piece = tokenizer.id_to_token(i) or ""
            self.token_bytes.append(
                special[i].encode() if i in special else bytes(table[ch] for ch in piece if ch in table)
            )
        self.max_token_bytes = max(len(b) for b in self.token_bytes)

    @classmethod
    def load(cls, directory: Path, manifest: Manifest) -> TextCodec:
        """The tokenizer a manifest names, after checking its sha256."""
        from tokenizers import Tokenizer

        pre = manifest.preprocess
        path = Path(directory) / pre["tokenizer"]
        if not path.is_file():
            raise ModelNotReadyError(f"{manifest.ref}: tokenizer file {pre['tokenizer']} is missing")
        if sha256_file(path) != pre["tokenizer_sha256"]:
            raise ModelNotReadyError(f"{manifest.ref}: sha256 of {pre['tokenizer']} differs from the manifest's")
        return cls(Tokenizer.from_file(str(path)), int(pre["eos_token_id"]), int(manifest.config.get("vocab_size", 0)))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids


class TextEncoder:
    """A `tokenizers` tokenizer that truncates at `max_length` and never pads by itself."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int = 0) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()  # padding is per batch, in pad_batch
        self.tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = pad_id

    @classmethod
    def from_file(cls, path: Path | str, max_length: int, pad_id: int = 0) -> TextEncoder:
        return cls(Path(path).read_text(encoding="utf-8"), max_length, pad_id)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """One int64 id array per text, [CLS] ... [SEP], at most max_length ids."""
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tokenizer.encode_batch(texts)]


def pad_batch(rows: list[np.ndarray], pad_id: int = 0) -> dict[str, np.ndarray]:
    """input_ids and attention_mask, both (B, T) int64, T the longest row of this batch."""
    longest = max(len(r) for r in rows)
    input_ids = np.full((len(rows), longest), pad_id, dtype=np.int64)  # (B, T)
    attention_mask = np.zeros((len(rows), longest), dtype=np.int64)  # (B, T)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
