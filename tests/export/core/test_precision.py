"""training_precision and autocast (export/core/training.py): bf16 only where asked for or native.

A tiny GAN trained a few steps under each precision checks the path end to end: bf16 autocast
runs the convolutions in bfloat16 while the weights, the optimizer state and the losses stay
fp32, and the manifest's training record says which precision trained the weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genserve.export.core import training
from genserve.export.core.publishing import precision_record, training_record
from genserve.export.core.training import PRECISION_ENV, autocast, training_precision
from genserve.export.families.dcgan.build import train_gan
from genserve.export.families.dcgan.model import GANConfig


def test_auto_takes_bf16_only_on_a_cpu_with_native_bf16(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.setattr(training, "native_bf16", lambda: True)
    assert training_precision() == "bf16"
    monkeypatch.setattr(training, "native_bf16", lambda: False)
    assert training_precision() == "fp32"


def test_the_environment_forces_either_precision(monkeypatch):
    monkeypatch.setattr(training, "native_bf16", lambda: True)
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert training_precision() == "fp32"
    monkeypatch.setattr(training, "native_bf16", lambda: False)
    monkeypatch.setenv(PRECISION_ENV, " BF16 ")
    assert training_precision() == "bf16"


def test_an_unknown_precision_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match="GENSERVE_TRAIN_PRECISION='fp16': expected auto, fp32 or bf16"):
        training_precision()


def test_autocast_runs_matmuls_in_bf16_only_for_bf16():
    a = torch.randn(4, 8)
    with autocast("bf16"):
        assert (a @ a.T).dtype == torch.bfloat16
    with autocast("fp32"):
        assert (a @ a.T).dtype == torch.float32


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_gan_trains_under_either_precision_and_its_record_says_which(monkeypatch, precision):
    monkeypatch.setenv(PRECISION_ENV, precision)
    rng = np.random.default_rng(0)
    images = rng.random((64, 1, 28, 28), dtype=np.float32)
    config = GANConfig(latent_dim=8, features=8, loss="hinge")
    result = train_gan(config, images, None, epochs=2, batch_size=32, seed=0, checkpoint_dir=None,
                       progress=False)
    assert result.precision == precision
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # fp32 master weights
    assert all(np.isfinite(v) for epoch in result.history for v in epoch.values())
    record = training_record("digits", 64, 0, "none", result)
    assert record["precision"] == precision_record(precision)
    assert record["precision"].startswith(precision)


def test_a_gan_config_that_opts_out_trains_fp32_even_when_bf16_is_forced(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    images = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
    config = GANConfig(latent_dim=8, features=8, mixed_precision=False)
    result = train_gan(config, images, None, epochs=1, batch_size=32, seed=0, checkpoint_dir=None,
                       progress=False)
    assert result.precision == "fp32"


def test_a_checkpoint_resumes_only_in_the_precision_that_wrote_it(monkeypatch, tmp_path):
    from genserve.export.core.checkpoint import CheckpointMismatchError

    images = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
    config = GANConfig(latent_dim=8, features=8)
    for written, resumed in [("bf16", "fp32"), ("fp32", "bf16")]:
        monkeypatch.setenv(PRECISION_ENV, written)
        train_gan(config, images, None, epochs=1, batch_size=32, seed=0, checkpoint_dir=tmp_path / written,
                  progress=False)
        monkeypatch.setenv(PRECISION_ENV, resumed)
        with pytest.raises(CheckpointMismatchError, match=f"precision: saved {written}, now {resumed}"):
            train_gan(config, images, None, epochs=2, batch_size=32, seed=0, checkpoint_dir=tmp_path / written,
                      progress=False)
