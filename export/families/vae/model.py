"""A variational autoencoder for small images (MNIST), optionally class-conditional.

Read top to bottom: config, the label helper and MLP, encoder, decoder, the model with its
loss, then the spec the registry and exporter use. The decoder is the serving graph
(z [, label] -> image); the encoder is exported too, for reconstructions and latent queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genserve.export.core.layers import example_label, mlp, with_label
from genserve.export.core.spec import GraphSpec, ModelSpec
from genserve.protocol import Loop


@dataclass
class VAEConfig:
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)  # encoder MLP widths; the decoder uses them reversed
    channels: int = 1
    height: int = 28
    width: int = 28
    num_classes: int = 0  # 0: unconditional; K > 0: a one-hot label joins encoder and decoder input

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)  # a config read back from JSON has a list

    @property
    def pixels(self) -> int:
        return self.channels * self.height * self.width


class Encoder(nn.Module):
    """q(z | image [, label]): image -> (mu, logvar) of a diagonal Gaussian."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.body = mlp([config.pixels + config.num_classes, *config.hidden])
        self.head = nn.Linear(config.hidden[-1], 2 * config.latent_dim)

    def forward(
        self, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = with_label(image.flatten(1), label, self.config.num_classes)  # (B, C*H*W [+ K])
        h = self.body(x)  # (B, hidden[-1])
        mu, logvar = self.head(h).chunk(2, dim=1)  # (B, D) each
        return mu, logvar


class Decoder(nn.Module):
    """p(image | z [, label]): Bernoulli pixel means, i.e. an image in [0, 1]."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        widths = list(reversed(config.hidden))
        self.body = mlp([config.latent_dim + config.num_classes, *widths])
        self.head = nn.Linear(widths[-1], config.pixels)

    def logits(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        h = self.body(with_label(z, label, c.num_classes))  # (B, hidden[0])
        return self.head(h).view(-1, c.channels, c.height, c.width)  # (B, C, H, W)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.logits(z, label))  # (B, C, H, W) in [0, 1]


class VAE(nn.Module):
    """Encoder + decoder with a standard normal prior on z."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def elbo_terms(
        self,
        image: torch.Tensor,
        label: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image (reconstruction, KL) in nats: one reparameterised z, analytic KL.

        Reconstruction is the Bernoulli negative log-likelihood (BCE summed over pixels; the
        pixels are grey levels in [0, 1], used as Bernoulli targets as is customary).
        """
        mu, logvar = self.encoder(image, label)  # (B, D) each
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps  # (B, D)
        logits = self.decoder.logits(z, label)  # (B, C, H, W)
        bce = F.binary_cross_entropy_with_logits(logits, image, reduction="none")
        recon = bce.flatten(1).sum(dim=1)  # (B,)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)  # (B,) KL(q || N(0, I))
        return recon, kl

    def loss(
        self,
        image: torch.Tensor,
        label: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Negative ELBO in nats per image, averaged over the batch."""
        recon, kl = self.elbo_terms(image, label, generator)
        return (recon + kl).mean()

    @torch.no_grad()
    def sample(
        self, n: int, label: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n images from the prior, (n, C, H, W) in [0, 1]."""
        z = torch.randn(n, self.config.latent_dim, generator=generator)  # (n, D)
        return self.decoder(z, label)


def vae_graphs(model: nn.Module) -> dict[str, GraphSpec]:
    """Serving graph "model" (the decoder) and "encoder", with random example inputs."""
    c: VAEConfig = model.config

    def decoder_inputs(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return {"z": torch.randn(batch, c.latent_dim, generator=g), **example_label(c, batch, g)}

    def encoder_inputs(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        image = torch.rand(batch, c.channels, c.height, c.width, generator=g)  # (B, C, H, W)
        return {"image": image, **example_label(c, batch, g)}

    return {
        "model": GraphSpec(model.decoder, decoder_inputs, ("image",)),
        "encoder": GraphSpec(model.encoder, encoder_inputs, ("mu", "logvar")),
    }


VAE_SPEC = ModelSpec(
    kind="vae",
    loop=Loop.LATENT_SAMPLER.value,
    config_class=VAEConfig,
    build=VAE,
    graphs=vae_graphs,
    description="MLP variational autoencoder; serves the decoder: z ~ N(0, I) [, label] -> image",
)
