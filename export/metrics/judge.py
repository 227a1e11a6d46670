"""The judge of the digit generators: the repository's digit classifier, and what it measures.

Digits are judged by the project's digit classifier (the FID recipe with an MNIST classifier
in place of Inception): the Frechet distance between its penultimate-layer features of
generated and of held-out real digits, the Inception score exp(E_x KL(p(y|x) || p(y))) of its
class probabilities (10 is the most a 10-class judge can give), and for conditional models the
fraction of samples it assigns to the requested class. The VAE and the GANs both read the
latest published JUDGE model through `latest_judge`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from genserve.export.core.publishing import load_latest
from genserve.export.metrics.images import frechet_distance, inception_score

JUDGE = "digits"  # the repository model whose features judge the digit generators


def latest_judge(repo_root: Path) -> tuple[nn.Module, str] | None:
    """The latest published JUDGE classifier (PyTorch) and its reference; None when absent."""
    found = load_latest(repo_root, JUDGE)
    if found is None:
        return None
    classifier, manifest = found
    return classifier, manifest.ref


@torch.no_grad()
def judge(
    classifier: nn.Module, images: np.ndarray | torch.Tensor, batch: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F), class probabilities (N, K)) of a CNNClassifier on images (N, C, H, W)."""
    classifier.eval()
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    features, probs = [], []
    for start in range(0, len(x), batch):
        h = classifier.features(x[start : start + batch])  # (B, F)
        features.append(h.numpy().astype(np.float64))
        probs.append(torch.softmax(classifier.head(h).double(), dim=1).numpy())
    return np.concatenate(features), np.concatenate(probs)


def digit_generation_metrics(
    classifier: nn.Module,
    generated: np.ndarray | torch.Tensor,
    heldout: np.ndarray,
    train: np.ndarray,
    requested: np.ndarray | None = None,
) -> dict[str, float]:
    """FD and IS of generated digits with their real-vs-real references; class accuracy.

    The reference compares as many training digits as there are generated ones with the same
    held-out digits: what a perfect generator (one that draws real digits) would score.
    """
    gen_features, gen_probs = judge(classifier, generated)
    held_features, held_probs = judge(classifier, heldout)
    pick = np.random.default_rng(0).permutation(len(train))[: len(gen_features)]
    train_features, _ = judge(classifier, train[np.sort(pick)])
    metrics = {
        "fd_digits": frechet_distance(gen_features, held_features),
        "fd_digits_real_vs_real": frechet_distance(train_features, held_features),
        "inception_score": inception_score(gen_probs),
        "inception_score_real": inception_score(held_probs),
    }
    if requested is not None:
        metrics["conditional_accuracy"] = float((gen_probs.argmax(axis=1) == requested).mean())
    return metrics
