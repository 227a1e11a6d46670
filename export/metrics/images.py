"""Image-quality metrics measured at export: PSNR, Frechet distance, Inception score, and the
face features the face generator is judged on (judge.py applies FD and IS to the digits).

Faces are judged on eigenfaces and HOG descriptors (`face_generation_metrics` says why).
"""

from __future__ import annotations

import numpy as np


def psnr(reference: np.ndarray, image: np.ndarray, peak: float = 1.0) -> float:
    """Mean over images of the per-image PSNR in dB, images (N, ...) in [0, peak]."""
    mse = ((reference - image) ** 2).reshape(len(reference), -1).mean(axis=1)
    mse = np.maximum(mse, 1e-12)  # an exact copy would be infinite dB
    return float(np.mean(10.0 * np.log10(peak**2 / mse)))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, F) and (M, F).

    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2), where the last trace is taken
    as the sum of square roots of the eigenvalues of S_a^1/2 S_b S_a^1/2 (symmetric, PSD):
    exact for singular covariances too, and no scipy needed.
    """
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = psd_sqrt(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def inception_score(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) over class probabilities (N, K); between 1 and K."""
    eps = 1e-12
    marginal = probs.mean(axis=0, keepdims=True)  # (1, K) p(y)
    kl = (probs * (np.log(probs + eps) - np.log(marginal + eps))).sum(axis=1)  # (N,)
    return float(np.exp(kl.mean()))


def hog_descriptors(images: np.ndarray) -> np.ndarray:
    """HOG of grey images (N, 1, H, W): 9 orientations in 8x8-pixel cells, one cell a block."""
    from skimage.feature import hog

    return np.stack([
        hog(image[0], orientations=9, pixels_per_cell=(8, 8), cells_per_block=(1, 1))
        for image in np.asarray(images, dtype=np.float64)
    ])  # (N, 3 * 3 * 9) for 25x25 faces


def pixels(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float64).reshape(len(images), -1)  # (N, C * H * W)


FACE_FEATURES = {"eigenfaces": pixels, "hog": hog_descriptors}  # metric name -> descriptor


class Projection:
    """The top principal components of descriptors of the training faces; projects any set."""

    def __init__(self, descriptors: np.ndarray, dims: int) -> None:
        self.mean = descriptors.mean(axis=0)
        _, _, vt = np.linalg.svd(descriptors - self.mean, full_matrices=False)
        self.components = vt[:dims]  # (dims, F)

    def __call__(self, descriptors: np.ndarray) -> np.ndarray:
        return (descriptors - self.mean) @ self.components.T  # (N, dims)


def nearest_distance(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Euclidean distance from each query image to its nearest reference image, (N,)."""
    q, r = pixels(queries), pixels(references)
    squared = (q**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2.0 * q @ r.T
    return np.sqrt(np.clip(squared.min(axis=1), 0.0, None))


def face_generation_metrics(
    generated: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray,
    nonfaces: np.ndarray | None = None,
    dims: int = 8,
    draws: int = 25,
) -> dict[str, float]:
    """Frechet distances of generated faces to the held-out faces, on two face descriptions,
    each with its references at the same sample sizes.

    The descriptions, each reduced to `dims` principal components of the training faces (a
    Frechet distance needs covariances, and LFW holds out only 20 faces):
    - eigenfaces (Turk & Pentland 1991): the pixels themselves; global appearance, lighting,
      pose, and whether the whole looks like a face at all;
    - HOG (Dalal & Triggs 2005): gradient orientations in 8x8-pixel cells, the classic face
      detection descriptor; where the eyes, nose, mouth and jaw edges are, whatever the
      lighting.
    Both are fixed, not learned: no face network can be downloaded here, an Inception network
    means nothing at 25x25, and a net trained on 80 faces would be a poor judge. Neither
    punishes blur much (measured: blurred real faces score like real ones); GANs fail by
    artifacts and missing modes rather than blur, which these do catch. Look at samples.png.

    For each description d:
    - fd_<d>: as many generated faces as there are training faces vs the held-out faces
      (mean over `draws` draws from all the generated ones);
    - fd_<d>_real_vs_real: the training faces vs the held-out faces, what real faces score;
    - fd_<d>_nonfaces: LFW's non-face patches (as many) vs the held-out faces.
    And nn_ratio: median pixel distance of generated faces to their nearest training face over
    that of held-out faces; well below 1 means the generator copies its training faces.
    """
    rng = np.random.default_rng(0)
    n = len(train)
    metrics = {}
    for name, describe in FACE_FEATURES.items():
        project = Projection(describe(train), dims)
        held = project(describe(heldout))
        gen = project(describe(generated))
        subsets = (gen[rng.permutation(len(gen))[:n]] for _ in range(draws))
        metrics[f"fd_{name}"] = float(np.mean([frechet_distance(s, held) for s in subsets]))
        metrics[f"fd_{name}_real_vs_real"] = frechet_distance(project(describe(train)), held)
        if nonfaces is not None:
            metrics[f"fd_{name}_nonfaces"] = frechet_distance(project(describe(nonfaces[:n])), held)
    copied = np.median(nearest_distance(generated, train))
    metrics["nn_ratio"] = float(copied / np.median(nearest_distance(heldout, train)))
    return metrics
