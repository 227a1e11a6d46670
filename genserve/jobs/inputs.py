"""Input files of input-file jobs: planning (items and chunk offsets) and reading one chunk.

JSONL: one JSON object per line, {"id": <caller's id>, "text": "..."} for a text classifier.
Images: an .npy of (n, C, H, W) or (n, H, W) float32, an .npz with `images` (and optional
`ids`), or a folder of PNGs (ids are file names, in name order). A line or an image that
cannot be parsed fails alone: it goes to errors.jsonl with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("jsonl", "npy", "npz", "png_dir")


def format_of(path: Path, given: str = "") -> str:
    if given:
        return given
    if path.is_dir():
        return "png_dir"
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "npy", "npz"):
        return suffix
    raise ValueError(f"input format must be .jsonl, .npy, .npz or a folder of .png files, got {path.name!r}")


def plan_jsonl(path: Path, chunk_size: int) -> tuple[int, list[int]]:
    """(lines, byte offset of each chunk's first line): one pass over the file."""
    offsets, lines, position = [], 0, 0
    with open(path, "rb") as f:
        for line in f:
            if lines % chunk_size == 0:
                offsets.append(position)
            lines += 1
            position += len(line)
    return lines, offsets


def count_items(path: Path, fmt: str) -> int:
    if fmt == "npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    if fmt == "npz":
        with np.load(path) as archive:
            return int(archive["images"].shape[0])
    if fmt == "png_dir":
        return len(png_files(path))
    raise ValueError(f"not an image format: {fmt}")


def png_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def read_jsonl(path: Path, offset: int, start: int, count: int) -> list[tuple[int, bytes]]:
    """(line number, raw line) of lines start..start+count-1, reading from `offset`."""
    out = []
    with open(path, "rb") as f:
        f.seek(offset)
        for i in range(count):
            out.append((start + i, f.readline()))
    return out


def parse_text_line(raw: bytes) -> tuple[str, str]:
    """(id, text) of one JSONL line, or ValueError saying what is wrong."""
    try:
        item = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    if not isinstance(item, dict):
        raise ValueError(f"a line must be a JSON object, got {type(item).__name__}")
    if "id" not in item:
        raise ValueError("missing 'id'")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'text' must be a non-empty string")
    return str(item["id"]), text


def read_images(path: Path, fmt: str, start: int, count: int) -> tuple[list[str], list[Any]]:
    """(ids, images) of items start..start+count-1: float32 (C, H, W) arrays, or PNG bytes."""
    if fmt == "npy":
        images = np.load(path, mmap_mode="r")[start : start + count]
        return [str(i) for i in range(start, start + len(images))], list(np.asarray(images))
    if fmt == "npz":
        with np.load(path) as archive:
            images = archive["images"][start : start + count]
            ids = archive["ids"][start : start + count] if "ids" in archive else range(start, start + len(images))
            return [str(i) for i in ids], list(images)
    files = png_files(path)[start : start + count]
    return [f.name for f in files], [f.read_bytes() for f in files]
