"""Export-time image metrics against closed-form values: PSNR, Frechet distance, Inception score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genserve.export.data.faces import load_faces, load_nonfaces, split_faces
from genserve.export.families.digits.model import CNNClassifier, CNNConfig
from genserve.export.metrics.images import (
    face_generation_metrics,
    frechet_distance,
    inception_score,
    psnr,
)
from genserve.export.metrics.judge import digit_generation_metrics


def test_psnr_of_a_known_error_is_its_decibels() -> None:
    """An error of 0.1 on every pixel is an MSE of 0.01: 20 dB."""
    clean = np.zeros((3, 1, 4, 4))
    assert psnr(clean, clean + 0.1) == pytest.approx(20.0)


def test_frechet_distance_matches_the_gaussian_closed_form() -> None:
    """For diagonal covariances FD = |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200_000, 3)) * [1.0, 2.0, 0.5]
    b = rng.standard_normal((200_000, 3)) * [3.0, 1.0, 0.5] + [1.0, 0.0, -2.0]
    expected = (1 + 0 + 4) + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_handles_singular_covariances() -> None:
    """Fewer samples than features (rank-deficient covariances) still gives a finite distance >= 0."""
    rng = np.random.default_rng(1)
    fd = frechet_distance(rng.standard_normal((5, 20)), rng.standard_normal((7, 20)))
    assert np.isfinite(fd) and fd >= 0.0


def test_inception_score_spans_one_to_the_number_of_classes() -> None:
    """Confident and balanced: K; one class for everything: 1; uniform guesses: 1."""
    eye = np.eye(4)
    assert inception_score(np.tile(eye, (25, 1))) == pytest.approx(4.0, rel=1e-6)
    assert inception_score(np.tile(eye[:1], (100, 1))) == pytest.approx(1.0)
    assert inception_score(np.full((100, 4), 0.25)) == pytest.approx(1.0)


def test_digit_metrics_score_real_digits_like_the_reference(digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Real digits fed in as 'generated' land near the real-vs-real reference; noise far from it."""
    images, labels = digits
    torch.manual_seed(0)  # an untrained judge: its random features must not change run to run
    judge = CNNClassifier(CNNConfig(widths=(4, 8), features=16)).eval()
    real = digit_generation_metrics(judge, images[:100], images[200:], images[100:200], labels[:100])
    noise = digit_generation_metrics(judge, torch.rand(100, 1, 28, 28), images[200:], images[100:200])
    assert real["fd_digits"] < 3 * real["fd_digits_real_vs_real"] < noise["fd_digits"]
    assert 0.0 <= real["conditional_accuracy"] <= 1.0 and "conditional_accuracy" not in noise


def test_face_metrics_tell_faces_from_copies_noise_and_non_faces() -> None:
    """On LFW: copies score like real faces but nn_ratio exposes them; noise and non-faces score
    several times the real-vs-real distance on both descriptions."""
    faces = load_faces()
    train_idx, held_idx = split_faces(len(faces), 0.2, 0)
    train, heldout = faces[train_idx], faces[held_idx]
    copies = face_generation_metrics(np.concatenate([train] * 3), train, heldout, load_nonfaces(), draws=3)
    noise = np.random.default_rng(0).random((200, 1, 25, 25), dtype=np.float32)
    scrambled = face_generation_metrics(noise, train, heldout, draws=3)
    assert copies["nn_ratio"] < 0.01 < 1.0 < scrambled["nn_ratio"]
    for name in ("eigenfaces", "hog"):
        reference = copies[f"fd_{name}_real_vs_real"]
        assert copies[f"fd_{name}"] < 1.5 * reference
        assert scrambled[f"fd_{name}"] > 2 * reference and copies[f"fd_{name}_nonfaces"] > 2 * reference
