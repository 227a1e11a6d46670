"""Offline MNIST loading: packaged digits, IDX files, the held-out split."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from genserve.export.data.mnist import load_mnist, read_idx, train_heldout_split


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def write_mnist_dir(directory: Path, n: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", pixels)
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", labels)
    return pixels, labels


def test_packaged_digits_are_scaled_images_with_int_labels() -> None:
    """The default source gives float32 (N, 1, 28, 28) in [0, 1] and int64 labels 0..9."""
    images, labels = load_mnist()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert np.bincount(labels).tolist() == [500] * 10


def test_limit_keeps_a_seeded_mix_of_classes(digits: tuple[np.ndarray, np.ndarray]) -> None:
    """`limit` returns that many digits, from every class, the same ones on every call."""
    images, labels = digits
    assert images.shape == (300, 1, 28, 28)
    assert set(labels.tolist()) == set(range(10))
    again_images, again_labels = load_mnist(limit=300)
    np.testing.assert_array_equal(again_labels, labels)
    np.testing.assert_array_equal(again_images, images)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_directory_is_parsed_and_scaled(tmp_path: Path, gz: bool) -> None:
    """IDX files written here, plain or gzipped, load back as scaled images and labels."""
    pixels, labels = write_mnist_dir(tmp_path, n=7, gz=gz)
    images, got_labels = load_mnist(tmp_path)
    assert images.shape == (7, 1, 28, 28) and images.dtype == np.float32
    np.testing.assert_allclose(images[:, 0], pixels / 255.0, rtol=0, atol=1e-7)
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)


def test_missing_idx_file_is_named_in_the_error(tmp_path: Path) -> None:
    """A directory without the labels file fails with FileNotFoundError naming that file."""
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_truncated_idx_file_is_rejected(tmp_path: Path) -> None:
    """An IDX file shorter than its header promises is an error, not a silent short read."""
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + bytes(4))
    with pytest.raises(ValueError, match="promises shape"):
        read_idx(path)


def test_split_is_stratified_disjoint_and_deterministic(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """10% of each class is held out, no digit is in both parts, and the seed fixes the split."""
    images, labels = digits
    x_train, y_train, x_held, y_held = train_heldout_split(images, labels, 0.1, seed=3)
    assert len(y_train) + len(y_held) == len(labels)
    expected_held = sum(round(0.1 * c) for c in np.bincount(labels))
    assert len(y_held) == expected_held
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_held)
    again = train_heldout_split(images, labels, 0.1, seed=3)
    np.testing.assert_array_equal(again[3], y_held)
    other = train_heldout_split(images, labels, 0.1, seed=4)
    assert not np.array_equal(other[2], x_held)
