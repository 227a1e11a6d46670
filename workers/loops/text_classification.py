"""The text_classifier serving loop: texts -> WordPiece ids -> ONNX logits -> top-k labels.

Tokenisation runs here, in the worker, with the `tokenizers` library and the tokenizer.json
published beside the ONNX files (no torch, no transformers). Each text is truncated at the
model's max length; a batch is padded to its longest text, never to a fixed length, with an
attention mask that keeps padding out of every text's result.

Batching reuses `run_requests`: each request is tokenised alone (a bad one fails alone) into
one ragged row per text; the rows of all requests are stacked and cut into chunks of at most
`max_batch_size` texts. `PaddedTexts` runs a chunk as ONNX Runtime calls of similar-length
texts (sorted, split where padding would exceed MAX_PADDING), each padded to its own longest
text: docstrings run from 15 to 256 tokens, and padding a chunk of 32 to its longest text made
the int8 classifier about 6x slower than these calls (18 vs 111 texts/s, bench/textclf.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from genserve.errors import ModelNotReadyError
from genserve.protocol import Outcome
from genserve.tokenization import TextEncoder, pad_batch
from genserve.workers.batching import CallLog, Feeds, run_requests
from genserve.workers.loops.labels import softmax, top_k
from genserve.workers.runtime import LoadedModel, OnnxModel

TOKENS = "tokens"  # feed of ragged rows: an object array holding one int64 id array per text
MAX_PADDING = 1.3  # a call's padded tokens stay within 1.3x its real ones (splitting calls costs little)


def ragged(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of different lengths as a 1-D object array, so they stack and slice like a batch."""
    out = np.empty(len(rows), dtype=object)
    out[:] = rows
    return out


def length_groups(lengths: list[int], max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Row indices in runs of similar length, shortest first: a run grows while, padded to its
    longest row, it holds at most `max_padding` times its real tokens."""
    groups: list[list[int]] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if not groups or (len(groups[-1]) + 1) * lengths[i] > max_padding * (real + lengths[i]):
            groups.append([])
            real = 0
        groups[-1].append(i)
        real += lengths[i]
    return groups


class PaddedTexts:
    """An OnnxModel seen through ragged token rows. A stacked chunk is run as a few ONNX
    Runtime calls of similar-length texts, each padded to its own longest text, so a long
    text does not make every short one beside it pay for its padding."""

    def __init__(self, model: OnnxModel, pad_id: int, calls: CallLog) -> None:
        self.model = model
        self.pad_id = pad_id
        self.output_names = model.output_names
        self.calls = calls  # the real ONNX Runtime calls, one per length group

    def run(self, feeds: Feeds) -> Feeds:
        rows = list(feeds[TOKENS])
        merged: Feeds = {}
        for group in length_groups([len(r) for r in rows]):
            out = self.model.run(pad_batch([rows[i] for i in group], self.pad_id))
            self.calls.record(len(group))
            for name, values in out.items():
                merged.setdefault(name, np.empty((len(rows), *values.shape[1:]), values.dtype))[group] = values
        return merged


def load_encoder(path: Path, sha256: str, max_length: int, pad_id: int) -> TextEncoder:
    """The tokenizer beside a model version, after checking it against the manifest."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelNotReadyError(f"{path}: sha256 differs from the manifest; refusing to load it")
    return TextEncoder(data.decode("utf-8"), max_length, pad_id)


def encoder_for(loaded: LoadedModel) -> TextEncoder:
    """The model's tokenizer, loaded once per process into the model's `state`."""
    if "text_encoder" not in loaded.state:
        pre = loaded.manifest.preprocess
        if loaded.directory is None or "tokenizer" not in pre:
            raise ModelNotReadyError(f"{loaded.manifest.ref} names no tokenizer file; re-export it")
        loaded.state["text_encoder"] = load_encoder(loaded.directory / pre["tokenizer"], pre["tokenizer_sha256"],
                                                    int(pre["max_length"]), int(pre.get("pad_id", 0)))
    return loaded.state["text_encoder"]


def classify_texts(loaded: LoadedModel, requests: list[dict[str, Any]], calls: CallLog) -> list[Outcome]:
    """text_classifier: {"texts": [...], "top_k": k} -> {"ok": True, "top": [[[index, p], ...], ...]}."""
    encoder = encoder_for(loaded)

    def prepare(request: dict[str, Any]) -> Feeds:
        return {TOKENS: ragged(encoder.encode(request["texts"]))}

    def finish(request: dict[str, Any], feeds: Feeds, out: Feeds) -> Outcome:
        return {"ok": True, "top": top_k(softmax(out["logits"]), int(request.get("top_k") or 1))}

    # `calls` gets the real ONNX Runtime calls from PaddedTexts; run_requests' chunk counts are dropped
    model = PaddedTexts(loaded.onnx, encoder.pad_id, calls)
    return run_requests(model, requests, prepare, finish, loaded.max_batch_size, CallLog())  # type: ignore[arg-type]
