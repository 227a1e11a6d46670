"""The VAE module: shapes, output range, loss terms, and the family registry entry."""

from __future__ import annotations

import math

import pytest
import torch

from genserve.export.families.vae.model import VAE, VAEConfig
from genserve.export.registry import specs
from genserve.protocol import LOOP_NAMES


def test_vae_is_registered_with_a_known_loop() -> None:
    """The registry maps "vae" to a latent_sampler spec that builds a VAE from its config."""
    spec = specs()["vae"]
    assert spec.kind == "vae" and spec.loop == "latent_sampler" and spec.loop in LOOP_NAMES
    assert isinstance(spec.build(spec.config_class()), VAE)


def test_decoder_maps_latents_to_images_in_unit_range(tiny_config: VAEConfig) -> None:
    """z (B, D) decodes to (B, 1, 28, 28) pixel means within [0, 1]."""
    model = VAE(tiny_config).eval()
    z = 10 * torch.randn(5, tiny_config.latent_dim)
    image = model.decoder(z)
    assert image.shape == (5, 1, 28, 28)
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_untrained_loss_is_near_a_coin_flip_per_pixel(tiny_config: VAEConfig) -> None:
    """At initialisation the reconstruction term is about 784 * ln 2 nats and KL is small."""
    model = VAE(tiny_config)
    x = torch.rand(8, 1, 28, 28)
    recon, kl = model.elbo_terms(x, generator=torch.Generator().manual_seed(0))
    assert recon.shape == (8,) and kl.shape == (8,)
    assert recon.mean().item() == pytest.approx(784 * math.log(2), rel=0.1)
    assert (kl >= 0).all() and kl.mean().item() < 5
    assert model.loss(x, generator=torch.Generator().manual_seed(0)).item() == pytest.approx(
        (recon + kl).mean().item()
    )


def test_conditional_model_needs_a_label(tiny_conditional_config: VAEConfig) -> None:
    """A class-conditional decoder refuses a call without labels and uses them when given."""
    model = VAE(tiny_conditional_config).eval()
    z = torch.zeros(2, tiny_conditional_config.latent_dim)
    with pytest.raises(ValueError, match="class-conditional"):
        model.decoder(z)
    images = model.decoder(z, torch.tensor([3, 7]))
    assert not torch.allclose(images[0], images[1])


def test_config_survives_a_json_round_trip() -> None:
    """A config rebuilt from its JSON form (lists for tuples) equals the original."""
    config = VAEConfig(hidden=[32, 16], num_classes=10)
    assert config.hidden == (32, 16)
    assert VAEConfig(**{**config.__dict__, "hidden": list(config.hidden)}) == config
