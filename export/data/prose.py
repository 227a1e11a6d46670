"""Offline English prose for the GPT and its byte-level BPE tokenizer.

The default corpus is the Python reference prose every Python install carries:
`pydoc_data.topics` (the Language Reference and Library Reference sections `help()` shows,
about 465 kB of English with code samples). Your own text: a `.txt`/`.md` file or a
directory of them (each file one document).

The held-out split is by document, never by window: a topic is either trained on or held out,
so held-out loss measures prose the model never saw. Documents are shuffled with the seed and
held out until `heldout_fraction` of the bytes is reached.

Tokenizer: byte-level BPE (the `tokenizers` library), trained on the training documents only.
Why not characters: BPE packs about 3.6 bytes into a token here, so a 512-token context
holds ~1.8 kB of prose instead of 512 characters, and each decode step (the serving cost)
yields 3.6 times the text. Byte-level means every UTF-8 string encodes and decodes exactly,
with no unknown token, which ScoreText needs for arbitrary user text; bits per byte make the
held-out loss comparable with character models and other tokenizers. The vocabulary stays
small (4,096 by default since the docstrings joined the training prose; 2,048, 3.6 bytes per
token, on the topics alone) because 465 kB cannot train a large embedding table; measured with the default GPT's 1,200 steps, 1,024 tokens (2.9 bytes per token) gave
2.00 bits per byte held out against 1.93 and 512 tokens 2.28 (at 400 steps 2,048 had been
0.08 worse than 1,024: more bytes per token pays once the embeddings are trained longer).
Training-only prose: with the default corpus, the docstrings of the standard library's own
modules (`stdlib_docstrings`: the module, class and method docstrings of at least
DOCSTRING_MIN_CHARS characters, tests excluded; 2,411 documents and 1.31 MB on Python 3.11)
are added to the training documents, never to the held-out ones. They are the same kind of
English about Python, from another source (none of the held-out topics' 8-word shingles occurs
in them, measured); the held-out split and its score stay those of the topics alone.
Documents are joined with the special token `<|endoftext|>` (GPT-2's
convention), which the model learns to emit at the end of a document: the serving loop
stops there (finish reason EOS).
"""

from __future__ import annotations

import ast
import hashlib
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"
TEXT_SUFFIXES = (".txt", ".md", ".rst")
DOCSTRING_MIN_CHARS = 200  # shorter docstrings are mostly one-line summaries and signatures
SKIPPED_STDLIB_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


@dataclass(frozen=True)
class Document:
    name: str
    text: str


def load_corpus(path: Path | None = None) -> list[Document]:
    """The pydoc topics (default), or a text file, or every text file under a directory."""
    if path is None:
        from pydoc_data.topics import topics

        return [Document(name, topics[name]) for name in sorted(topics)]
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
    )
    docs = [Document(str(p.relative_to(path) if p != path else p.name), p.read_text("utf-8")) for p in files]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise ValueError(f"no text in {path}: give a UTF-8 text file or a directory of {TEXT_SUFFIXES} files")
    return docs


def stdlib_docstrings(min_chars: int = DOCSTRING_MIN_CHARS, root: Path | None = None) -> list[Document]:
    """Docstrings of the standard library's modules, their classes and the functions defined in
    either (not nested ones), of at least `min_chars` characters, as documents named
    `module.py:Qualified.name`; sorted by path, so deterministic for one Python install."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    docs: list[Document] = []
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_STDLIB_DIRS.intersection(path.relative_to(root).parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):  # a file the parser refuses is skipped
            continue
        name = str(path.relative_to(root))
        todo: list[tuple[str, ast.AST]] = [("", tree)]
        while todo:
            prefix, node = todo.pop(0)
            text = ast.get_docstring(node, clean=True)
            if text and len(text) >= min_chars:
                docs.append(Document(f"{name}:{prefix}" if prefix else name, text))
            if isinstance(node, (ast.Module, ast.ClassDef)):
                todo.extend(
                    (f"{prefix}.{child.name}" if prefix else child.name, child)
                    for child in node.body
                    if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                )
    return docs


def size_and_digest(docs: list[Document]) -> tuple[int, str]:
    """The documents' UTF-8 bytes and the first 16 hex digits of their texts' sha256."""
    digest = hashlib.sha256("\0".join(d.text for d in docs).encode()).hexdigest()[:16]
    return sum(len(d.text.encode()) for d in docs), digest


def training_prose(data_path: Path | None, limit: int | None) -> list[Document]:
    """The training-only documents added to a split: the standard library's docstrings when the
    default corpus is used whole (neither your own text nor a `limit` run gets them)."""
    return stdlib_docstrings() if data_path is None and limit is None else []


def describe_docstrings(docs: list[Document]) -> str:
    """One line for the manifest: the training-only docstrings' count, size and digest."""
    size, digest = size_and_digest(docs)
    return (f"docstrings of the Python {sys.version_info.major}.{sys.version_info.minor} standard library "
            f"(>= {DOCSTRING_MIN_CHARS} characters): {len(docs)} documents, {size} bytes, sha256 {digest}")


def describe_corpus(path: Path | None, docs: list[Document]) -> str:
    """One line for the manifest: source, size and a digest of the texts."""
    size, digest = size_and_digest(docs)
    source = (
        f"pydoc_data.topics of Python {sys.version_info.major}.{sys.version_info.minor}"
        if path is None else f"text files from {Path(path).name}"
    )
    return f"{source}: {len(docs)} documents, {size} bytes, sha256 {digest}"


def split_documents(
    docs: list[Document], heldout_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """(train, heldout) by whole documents; heldout holds about `heldout_fraction` of the bytes."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if len(docs) < 2:
        raise ValueError(f"a held-out split needs at least 2 documents, got {len(docs)}")
    order = np.random.default_rng(seed).permutation(len(docs))
    target = heldout_fraction * sum(len(d.text.encode()) for d in docs)
    held, size = set(), 0
    for i in order:
        if size >= target or len(held) == len(docs) - 1:
            break
        held.add(int(i))
        size += len(docs[i].text.encode())
    train = [d for i, d in enumerate(docs) if i not in held]
    heldout = [d for i, d in enumerate(docs) if i in held]
    return train, heldout


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE with `<|endoftext|>` as id 0; deterministic for the same texts."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def encode_stream(tokenizer: Tokenizer, docs: list[Document]) -> np.ndarray:
    """All documents as one int64 stream, each followed by the end-of-text token."""
    eos = tokenizer.token_to_id(EOS)
    encoded = tokenizer.encode_batch([d.text for d in docs])
    parts = [np.array([*e.ids, eos], dtype=np.int64) for e in encoded]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
