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


def test_conv_vae_keeps_the_shapes_of_the_mlp_one() -> None:
    """The convolutional encoder and decoder map (B, 1, 28, 28) <-> (B, D) like the MLP's."""
    model = VAE(VAEConfig(latent_dim=6, hidden=(32,), arch="conv", features=8, num_classes=10)).eval()
    label = torch.arange(3)
    mu, logvar = model.encoder(torch.rand(3, 1, 28, 28), label)
    assert mu.shape == logvar.shape == (3, 6)
    image = model.decoder(mu, label)
    assert image.shape == (3, 1, 28, 28) and image.min() >= 0.0 and image.max() <= 1.0


def test_mixture_prior_draws_components_by_weight_and_fits_clusters() -> None:
    """Fitted to two well-separated clusters (1:3), the prior finds their centres and z[:, 0]
    picks each component about as often as its weight; log_prob is highest at a centre."""
    from genserve.export.families.vae.model import MixturePrior

    g = torch.Generator().manual_seed(0)
    latents = torch.cat([torch.randn(250, 2, generator=g) * 0.1 + 5.0,
                         torch.randn(750, 2, generator=g) * 0.1 - 5.0])
    prior = MixturePrior(2, 2)
    prior.fit(latents, None, seed=0)
    centres = sorted(prior.means[0, :, 0].tolist())
    assert centres == pytest.approx([-5.0, 5.0], abs=0.05)
    drawn = prior(torch.randn(4000, 3, generator=g))  # (4000, 2)
    assert (drawn[:, 0] > 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert drawn[drawn[:, 0] > 0].std(dim=0).mean().item() == pytest.approx(0.1, abs=0.02)
    at = prior.log_prob(torch.tensor([[5.0, 5.0], [0.0, 0.0]]))
    assert at[0] > at[1]


def test_conditional_mixture_prior_fits_one_mixture_per_class() -> None:
    """With classes, each label's latents get their own mixture, and the label picks it."""
    from genserve.export.families.vae.model import MixturePrior

    g = torch.Generator().manual_seed(1)
    labels = torch.arange(600) % 3
    latents = labels[:, None].float() * 10.0 + 0.1 * torch.randn(600, 2, generator=g)
    prior = MixturePrior(2, 2, classes=3)
    prior.fit(latents, labels, seed=0)
    drawn = prior(torch.randn(30, 3, generator=g), torch.full((30,), 2))
    assert drawn.mean(dim=0).tolist() == pytest.approx([20.0, 20.0], abs=0.3)


def test_learned_prior_kl_estimate_matches_the_analytic_kl_of_a_standard_normal() -> None:
    """A learned mixture whose one component is N(0, I) gives, averaged over draws, the
    analytic KL to N(0, I): the Monte Carlo term estimates the same quantity."""
    config = VAEConfig(latent_dim=4, hidden=(32,))
    plain = VAE(config)
    learned = VAE(VAEConfig(latent_dim=4, hidden=(32,), learned_prior=1))
    learned.encoder.load_state_dict(plain.encoder.state_dict())
    learned.decoder.load_state_dict(plain.decoder.state_dict())
    with torch.no_grad():
        learned.learned.means.zero_()
        learned.learned.log_std.zero_()
    x = torch.rand(4, 1, 28, 28)
    _, analytic = plain.elbo_terms(x, generator=torch.Generator().manual_seed(0))
    estimates = [learned.elbo_terms(x, generator=torch.Generator().manual_seed(s))[1] for s in range(2000)]
    assert torch.stack(estimates).mean(dim=0).tolist() == pytest.approx(analytic.tolist(), abs=0.05)


def test_learned_prior_is_what_the_served_graph_samples_from() -> None:
    """copy_to writes the learned mixture into the served MixturePrior: the same log density
    at any point, and draws with the mixture's mean; a served z has one more entry."""
    config = VAEConfig(latent_dim=3, hidden=(16,), learned_prior=4, num_classes=2)
    model = VAE(config)
    assert config.noise_dim == 4 and model.prior is not None
    with torch.no_grad():
        model.learned.logits.copy_(torch.tensor([[0.0, 1.0, 2.0, -1.0], [0.5, 0.0, 0.0, 0.0]]))
        model.learned.log_std.uniform_(-1.0, 0.5)
    model.learned.copy_to(model.prior)
    label = torch.tensor([0, 1, 1, 0, 1])
    z = torch.randn(5, 3)
    assert model.prior.log_prob(z, label).tolist() == pytest.approx(
        model.learned.log_prob(z, label).tolist(), abs=1e-4)
    drawn = model.prior(torch.randn(40000, 4, generator=torch.Generator().manual_seed(0)),
                        torch.ones(40000, dtype=torch.long))
    weights = torch.softmax(model.learned.logits[1], dim=0)
    expected = (weights[:, None] * model.learned.means[1]).sum(dim=0)
    assert drawn.mean(dim=0).tolist() == pytest.approx(expected.tolist(), abs=0.05)


def test_unknown_learning_rate_decay_is_refused() -> None:
    """A misspelt lr_decay fails when the config is made, naming the choices."""
    with pytest.raises(ValueError, match="none, cosine"):
        VAEConfig(lr_decay="cosin")


def test_gated_layers_gate_each_unit_by_a_sigmoid_of_its_own_half() -> None:
    """activation="gated": each hidden unit is value * sigmoid(gate), both halves of one Linear,
    so a unit whose gate weights are pushed far negative outputs zero."""
    model = VAE(VAEConfig(latent_dim=4, hidden=(16, 8), activation="gated")).eval()
    first = model.encoder.body[0]
    x = torch.rand(3, 784)
    value, gate = first.linear(x).chunk(2, dim=1)
    assert torch.allclose(first(x), value * torch.sigmoid(gate), atol=1e-6)
    with torch.no_grad():
        first.linear.bias[16] = -1e4  # the first unit's gate
    assert first(x)[:, 0].abs().max().item() == 0.0 and first(x)[:, 1].abs().min().item() > 0.0
    mu, _ = model.encoder(torch.rand(2, 1, 28, 28))
    assert mu.shape == (2, 4) and model.decoder(mu).shape == (2, 1, 28, 28)


def test_unknown_activation_is_refused() -> None:
    """A misspelt activation fails when the config is made, naming the choices."""
    with pytest.raises(ValueError, match="relu, elu, gated"):
        VAEConfig(activation="gelu")
