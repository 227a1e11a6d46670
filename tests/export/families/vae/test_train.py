"""VAE training: the loss falls, runs are reproducible, checkpoints resume where they stopped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genserve.export.core.checkpoint import CHECKPOINT, CheckpointMismatchError
from genserve.export.core.training import init_module
from genserve.export.data.mnist import train_heldout_split
from genserve.export.families.vae.model import VAE, VAEConfig
from genserve.export.families.vae.train import train_vae
from genserve.export.metrics.elbo import heldout_neg_elbo


def train(config: VAEConfig, digits: tuple[np.ndarray, np.ndarray], epochs: int, **kw):
    images, labels = digits
    options = {"batch_size": 32, "lr": 2e-3, "seed": 0, "checkpoint_dir": None, "progress": False}
    return train_vae(config, images, labels, epochs=epochs, **{**options, **kw})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loss_goes_down_on_a_few_hundred_digits(
    tiny_config: VAEConfig, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Training lowers the train loss and the held-out negative ELBO."""
    x_train, y_train, x_held, y_held = train_heldout_split(*digits)
    before = heldout_neg_elbo(init_module(VAE, tiny_config, seed=0), x_held, y_held)
    result = train(tiny_config, (x_train, y_train), epochs=6)
    after = heldout_neg_elbo(result.model, x_held, y_held)
    assert len(result.history) == 6
    assert result.history[-1]["loss"] < 0.8 * result.history[0]["loss"]
    assert after.neg_elbo < 0.8 * before.neg_elbo
    assert after.neg_elbo == pytest.approx(after.recon + after.kl)


def test_same_seed_gives_the_same_weights(
    tiny_config: VAEConfig, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Two runs with one seed end bit-identical; another seed ends elsewhere."""
    a = train(tiny_config, digits, epochs=2)
    b = train(tiny_config, digits, epochs=2)
    c = train(tiny_config, digits, epochs=2, seed=1)
    assert same_weights(a.model, b.model)
    assert a.history == b.history
    assert not same_weights(a.model, c.model)


def test_resume_continues_at_the_saved_epoch(
    tmp_path: Path, tiny_config: VAEConfig, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """2 epochs, then a call for 4 resumes at epoch 2 and ends where 4 uninterrupted epochs end."""
    first = train(tiny_config, digits, epochs=2, checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert saved["done"] == 2 and saved["config"]["hidden"] == (64,)
    resumed = train(tiny_config, digits, epochs=4, checkpoint_dir=tmp_path)
    straight = train(tiny_config, digits, epochs=4)
    assert first.resumed_from == 0 and resumed.resumed_from == 2
    assert resumed.history[:2] == first.history
    assert resumed.history == straight.history
    assert same_weights(resumed.model, straight.model)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["done"] == 4


def test_finished_checkpoint_is_loaded_without_training(
    tmp_path: Path, tiny_config: VAEConfig, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Asking for no more epochs than the checkpoint holds returns the saved model as is."""
    done = train(tiny_config, digits, epochs=2, checkpoint_dir=tmp_path)
    again = train(tiny_config, digits, epochs=2, checkpoint_dir=tmp_path)
    assert again.resumed_from == 2 and again.history == done.history
    assert same_weights(again.model, done.model)


def test_checkpoint_of_another_config_is_refused(
    tmp_path: Path, tiny_config: VAEConfig, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Resuming with a different model config raises instead of loading mismatched weights."""
    train(tiny_config, digits, epochs=1, checkpoint_dir=tmp_path)
    wider = VAEConfig(latent_dim=4, hidden=(96,))
    with pytest.raises(CheckpointMismatchError, match="hidden"):
        train(wider, digits, epochs=2, checkpoint_dir=tmp_path)


def test_checkpoint_of_other_data_is_refused(
    tmp_path: Path, tiny_config: VAEConfig, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Resuming on different training digits raises and names the data fingerprint."""
    images, labels = digits
    train(tiny_config, (images[:200], labels[:200]), epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="data_sha256"):
        train(tiny_config, (images[100:], labels[100:]), epochs=2, checkpoint_dir=tmp_path)


def test_kl_warm_up_trains_a_resumable_model(digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    """With KL warm-up, a run stopped after one epoch and resumed ends with the weights of
    one that never stopped (the warm-up counts optimizer steps, which the checkpoint keeps)."""
    images, labels = digits
    config = VAEConfig(latent_dim=4, hidden=(32,), kl_warmup_epochs=3)
    kw = {"batch_size": 64, "lr": 1e-3, "seed": 0, "progress": False}
    straight = train_vae(config, images, labels, epochs=2, checkpoint_dir=None, **kw)
    train_vae(config, images, labels, epochs=1, checkpoint_dir=tmp_path, **kw)
    resumed = train_vae(config, images, labels, epochs=2, checkpoint_dir=tmp_path, **kw)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_shifted_training_digits_change_the_run_and_resume_alike(
    digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """augment_shift trains on moved digits (another run than without it), drawn from the
    epoch's generator, so a resumed run ends with the weights of one that never stopped."""
    images, labels = digits
    config = VAEConfig(latent_dim=4, hidden=(32,), augment_shift=1)
    kw = {"batch_size": 64, "lr": 1e-3, "seed": 0, "progress": False}
    straight = train_vae(config, images, labels, epochs=2, checkpoint_dir=None, **kw)
    plain = train_vae(VAEConfig(latent_dim=4, hidden=(32,)), images, labels, epochs=2, checkpoint_dir=None, **kw)
    assert not same_weights(straight.model, plain.model)
    train_vae(config, images, labels, epochs=1, checkpoint_dir=tmp_path, **kw)
    resumed = train_vae(config, images, labels, epochs=2, checkpoint_dir=tmp_path, **kw)
    assert same_weights(straight.model, resumed.model)


def test_cosine_learning_rate_falls_from_lr_to_zero() -> None:
    """The schedule starts at lr, is at half of it halfway and ends at 0."""
    from genserve.export.families.vae.train import cosine_lr

    assert cosine_lr(1e-3, 0, 100) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 50, 100) == pytest.approx(5e-4)
    assert cosine_lr(1e-3, 100, 100) == pytest.approx(0.0, abs=1e-12)


class Stopped(Exception):
    """The stand-in for a kill right after a checkpoint was written."""


def test_learned_prior_and_cosine_decay_resume_alike(
    digits: tuple[np.ndarray, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a learned prior and the cosine decay, a 2-epoch run stopped after its first
    epoch's checkpoint and resumed ends with the weights of one that never stopped, the
    served mixture is the learned one, and resuming the finished schedule for more epochs
    is refused."""
    from genserve.export.core import training

    images, labels = digits
    config = VAEConfig(latent_dim=4, hidden=(32,), learned_prior=3, lr_decay="cosine")
    kw = {"batch_size": 64, "lr": 1e-3, "seed": 0, "progress": False}
    straight = train_vae(config, images, labels, epochs=2, checkpoint_dir=None, **kw)
    save = training.save_checkpoint

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise Stopped

    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    with pytest.raises(Stopped):
        train_vae(config, images, labels, epochs=2, checkpoint_dir=tmp_path / "a", **kw)
    monkeypatch.setattr(training, "save_checkpoint", save)
    assert torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["done"] == 1
    resumed = train_vae(config, images, labels, epochs=2, checkpoint_dir=tmp_path / "a", **kw)
    assert not same_weights(straight.model, train_vae(config, images, labels, epochs=1,
                                                      checkpoint_dir=None, **kw).model)
    assert same_weights(straight.model, resumed.model)
    assert torch.equal(straight.model.prior.means, straight.model.learned.means.detach())
    train_vae(config, images, labels, epochs=2, checkpoint_dir=tmp_path / "b", **kw)
    with pytest.raises(CheckpointMismatchError, match="lr_decay_epochs"):
        train_vae(config, images, labels, epochs=3, checkpoint_dir=tmp_path / "b", **kw)


def test_ex_post_mixture_still_serves_beside_a_learned_prior(digits: tuple[np.ndarray, np.ndarray]) -> None:
    """With prior_components as well, the served mixture is fitted ex post (its own size),
    while the held-out ELBO is taken under the learned prior."""
    images, labels = digits
    config = VAEConfig(latent_dim=4, hidden=(32,), learned_prior=3, prior_components=2)
    result = train_vae(config, images, labels, epochs=1, batch_size=64, lr=1e-3, seed=0,
                       checkpoint_dir=None, progress=False)
    model = result.model
    assert model.prior.means.shape == (1, 2, 4) and model.learned.means.shape == (1, 3, 4)
    report = heldout_neg_elbo(model, images[:100], labels[:100], seed=0)
    x = torch.from_numpy(np.ascontiguousarray(images[:100], dtype=np.float32))
    with torch.no_grad():
        _, kl = model.elbo_terms(x, generator=torch.Generator().manual_seed(0))  # the same draws
        mu, logvar = model.encoder(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))  # those draws again
        z = mu + torch.exp(0.5 * logvar) * eps
        standard = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=1)  # log N(z; 0, I)
        learned = model.learned.log_prob(z)
    assert report.kl == pytest.approx(kl.mean().item(), rel=1e-5)
    # under N(0, I) the same draws would score otherwise, image by image
    assert (learned - standard).abs().mean().item() > 0.3
