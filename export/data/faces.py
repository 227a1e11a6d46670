"""Offline face loaders: the LFW subset scikit-image ships, or a folder of the user's images.

Both return float32 (N, 1, H, W) in [0, 1], grey, so the face GAN never cares where the faces
came from. `skimage.data.lfw_subset()` is 200 grey 25x25 crops: the first 100 are faces, the
other 100 are non-face patches (kept apart as a "not a face" reference for the metrics).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LFW_SIZE = (25, 25)
LFW_FACES = 100  # lfw_subset(): faces first, then as many non-faces
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


def load_faces(
    path: Path | None = None, *, size: tuple[int, int] = LFW_SIZE, limit: int | None = None
) -> np.ndarray:
    """Faces float32 (N, 1, H, W) in [0, 1].

    Without `path`: LFW's 100 faces from scikit-image. With `path`: every image file under that
    folder (recursively, in sorted order), made grey, centre-cropped to the aspect of `size`
    and resized to it. `limit` keeps the first N.
    """
    faces = _lfw()[:LFW_FACES] if path is None else _folder(Path(path), size)
    if path is None and faces.shape[2:] != size:
        faces = np.stack([_resize(face[0], size) for face in faces])[:, None]
    return faces[:limit] if limit is not None else faces


def load_nonfaces() -> np.ndarray:
    """LFW subset's 100 non-face patches, (100, 1, 25, 25): what "not a face" looks like."""
    return _lfw()[LFW_FACES:]


def split_faces(n: int, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), a seeded random split, each sorted."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(heldout_fraction * n))
    return np.sort(order[held:]), np.sort(order[:held])


def describe_faces(path: Path | None = None) -> str:
    """One line naming where `load_faces(path)` reads its faces, for the manifest."""
    if path is None:
        return "LFW, the 100 25x25 grey faces shipped with scikit-image (data.lfw_subset)"
    return f"face images from the folder {Path(path).name}"


def _lfw() -> np.ndarray:
    from skimage.data import lfw_subset  # optional: only the default face source needs it

    return lfw_subset().astype(np.float32)[:, None]  # (200, 1, 25, 25) in [0, 1]


def _folder(directory: Path, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"no face images in {directory}; "
            f"expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    faces = []
    for file in files:
        with Image.open(file) as picture:
            grey = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
        faces.append(_resize(grey, size))
    return np.stack(faces)[:, None]


def _resize(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop a grey image (H, W) in [0, 1] to the aspect of `size`, then resize to it."""
    from PIL import Image

    height, width = grey.shape
    aspect = size[1] / size[0]
    if width / height > aspect:  # too wide: keep the full height
        crop_h, crop_w = height, round(height * aspect)
    else:
        crop_h, crop_w = round(width / aspect), width
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = np.ascontiguousarray(grey[top : top + crop_h, left : left + crop_w], dtype=np.float32)
    picture = Image.fromarray(crop)  # mode "F": resampled in float, no 8-bit rounding
    resized = picture.resize((size[1], size[0]), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
