"""A variational autoencoder for small images (MNIST), optionally class-conditional.

Read top to bottom: config, encoder and decoder bodies (an MLP, or convolutions with
`arch="conv"`), encoder, decoder, the mixture prior, the model with its loss, then the spec the
registry and exporter use. The serving graph is the prior followed by the decoder
(z [, label] -> image); the encoder (image [, label] -> mu, logvar) and the bare decoder
(latent [, label] -> image, no prior in front) are exported too, for EncodeImages: the latent
of an image is its posterior mean in the VAE's own latent space, and its reconstruction is
decoder(mu), which for a mixture-prior model the serving graph cannot compute.

With `prior_components` K > 0 the prior the model samples from is a Gaussian mixture fitted
to the training digits' posterior means after training (ex-post density estimation, Ghosh et
al. 2020): N(0, I) leaves holes where no digit's posterior lies, and decodes them as
in-between shapes. The served graph still takes standard normal noise: z[:, 0] picks the
component (through the normal CDF, in proportion to its weight) and z[:, 1:] is the noise
of its full-covariance Gaussian, so such a model's served latent has latent_dim + 1 entries.

With `learned_prior` K > 0 the training prior is not N(0, I) but a K-Gaussian diagonal
mixture (per class for a conditional model) learned with the encoder and decoder (Tomczak &
Welling 2018 learn such priors; a mixture of Gaussians is the simplest): the KL term becomes
a one-draw Monte Carlo estimate of KL(q || prior), and the held-out ELBO is the model's under
that prior. Without an ex-post mixture (`prior_components` 0) the learned mixture is also
what the served graph samples from; with one, the ex-post fit still serves (its samples
scored better, README).
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F
from torch import nn

from genserve.export.core.layers import check_activation, example_label, mlp, with_label
from genserve.export.core.spec import GraphSpec, ModelSpec
from genserve.protocol import Loop


LR_DECAYS = ("none", "cosine")


@dataclass
class VAEConfig:
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)  # encoder MLP widths; the decoder uses them reversed
    channels: int = 1
    height: int = 28
    width: int = 28
    num_classes: int = 0  # 0: unconditional; K > 0: a one-hot label joins encoder and decoder input
    arch: str = "mlp"  # "mlp": `hidden` widths; "conv": two stride-2 convolutions, `features` wide
    features: int = 32  # conv: channels of the outer convolution; the inner one doubles them
    prior_components: int = 0  # 0: N(0, I) prior; K > 0: a K-Gaussian mixture fitted after training
    kl_warmup_epochs: int = 0  # KL weight rises linearly from 0 to 1 over this many epochs
    augment_shift: int = 0  # training digits moved by up to this many pixels, anew each step
    learned_prior: int = 0  # K > 0: train against a K-Gaussian diagonal mixture prior learned with the model
    lr_decay: str = "none"  # "cosine": the learning rate falls from lr to 0 along a half cosine over the run
    activation: str = "relu"  # the MLP layers' nonlinearity: "relu", "elu" or "gated" (export/core/layers.py)

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)  # a config read back from JSON has a list
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, not {self.lr_decay!r}")
        check_activation(self.activation)  # when the config is made, not when the model is built

    @property
    def pixels(self) -> int:
        return self.channels * self.height * self.width

    @property
    def noise_dim(self) -> int:
        """Entries of the served graph's standard normal z: one more picks a mixture component."""
        return self.latent_dim + (1 if self.prior_components or self.learned_prior else 0)

    @property
    def grid(self) -> tuple[int, int]:
        """conv: the inner feature map's side, after two stride-2 convolutions."""
        return -(-self.height // 4), -(-self.width // 4)


def conv_body(c: VAEConfig) -> nn.Sequential:
    """image (B, C, H, W) -> features (B, 2F * H/4 * W/4): two 4x4 stride-2 convolutions."""
    return nn.Sequential(
        nn.Conv2d(c.channels, c.features, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c.features, 2 * c.features, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
    )


class ConvHead(nn.Module):
    """features (B, 2F * h * w) -> logits (B, C, 4h, 4w): nearest 2x upsampling + 3x3
    convolutions (no transposed convolutions: their uneven overlap prints a checkerboard)."""

    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        self.config = c
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * c.features, c.features, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c.features, c.channels, 3, padding=1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        c = self.config
        logits = self.body(h.view(-1, 2 * c.features, *c.grid))  # (B, C, 4h, 4w)
        top, left = (logits.shape[2] - c.height) // 2, (logits.shape[3] - c.width) // 2
        return logits[:, :, top : top + c.height, left : left + c.width]  # (B, C, H, W)


class Encoder(nn.Module):
    """q(z | image [, label]): image -> (mu, logvar) of a diagonal Gaussian."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = c = config
        self.conv = conv_body(c) if c.arch == "conv" else nn.Flatten()
        flat = 2 * c.features * c.grid[0] * c.grid[1] if c.arch == "conv" else c.pixels
        self.body = mlp([flat + c.num_classes, *c.hidden], c.activation)
        self.head = nn.Linear(c.hidden[-1], 2 * c.latent_dim)

    def forward(
        self, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = with_label(self.conv(image), label, self.config.num_classes)  # (B, flat [+ K])
        h = self.body(x)  # (B, hidden[-1])
        mu, logvar = self.head(h).chunk(2, dim=1)  # (B, D) each
        return mu, logvar


class Decoder(nn.Module):
    """p(image | z [, label]): Bernoulli pixel means, i.e. an image in [0, 1]."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = c = config
        widths = list(reversed(c.hidden))
        self.body = mlp([c.latent_dim + c.num_classes, *widths], c.activation)
        if c.arch == "conv":
            flat = 2 * c.features * c.grid[0] * c.grid[1]
            self.head = nn.Sequential(nn.Linear(widths[-1], flat), nn.ReLU(), ConvHead(c))
        else:
            self.head = nn.Linear(widths[-1], c.pixels)

    def logits(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        h = self.body(with_label(z, label, c.num_classes))  # (B, hidden[0])
        return self.head(h).view(-1, c.channels, c.height, c.width)  # (B, C, H, W)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.logits(z, label))  # (B, C, H, W) in [0, 1]


class MixturePrior(nn.Module):
    """A K-Gaussian mixture over z (full covariances) driven by standard normal noise; for a
    conditional model one mixture per class, p(z | label), fitted to that class's latents.

    Its parameters are buffers: they are fitted to the training latents (`fit`), not learned
    by gradient, and travel with the weights."""

    def __init__(self, components: int, dim: int, classes: int = 0) -> None:
        super().__init__()
        m = max(classes, 1)  # mixtures: one per class, or one
        self.register_buffer("cumulative", torch.linspace(1.0 / components, 1.0, components).repeat(m, 1))  # (M, K)
        self.register_buffer("means", torch.zeros(m, components, dim))  # (M, K, D)
        self.register_buffer("scale_tril", torch.eye(dim).repeat(m, components, 1, 1))  # (M, K, D, D)

    def fit(self, latents: torch.Tensor, labels: torch.Tensor | None, seed: int) -> None:
        """Maximum-likelihood mixtures (EM, scikit-learn) of latents (N, D), per class if labelled."""
        from sklearn.mixture import GaussianMixture

        for m in range(len(self.means)):
            rows = latents if labels is None else latents[labels == m]
            gmm = GaussianMixture(self.means.shape[1], covariance_type="full", reg_covar=1e-4,
                                  random_state=seed).fit(rows.double().numpy())
            self.cumulative[m] = torch.cumsum(torch.as_tensor(gmm.weights_, dtype=torch.float32), 0)
            self.means[m] = torch.as_tensor(gmm.means_, dtype=torch.float32)
            self.scale_tril[m] = torch.linalg.cholesky(torch.as_tensor(gmm.covariances_)).float()

    def forward(self, noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        m = torch.zeros_like(noise[:, 0], dtype=torch.long) if label is None else label  # (B,) mixture
        u = 0.5 * (1.0 + torch.erf(noise[:, 0] / math.sqrt(2.0)))  # (B,) uniform in (0, 1)
        k = (u[:, None] > self.cumulative[m, :-1]).long().sum(dim=1)  # (B,) component, P = weight
        eps = noise[:, 1:].unsqueeze(2)  # (B, D, 1)
        return self.means[m, k] + torch.matmul(self.scale_tril[m, k], eps).squeeze(2)  # (B, D)

    def log_prob(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z [| label]) of latents (B, D), (B,)."""
        m = torch.zeros(len(z), dtype=torch.long) if label is None else label
        cumulative = self.cumulative[m]  # (B, K)
        weights = torch.diff(cumulative, prepend=cumulative.new_zeros(len(z), 1))
        gauss = torch.distributions.MultivariateNormal(self.means[m], scale_tril=self.scale_tril[m])
        joint = gauss.log_prob(z[:, None, :]) + torch.log(weights.clamp_min(1e-12))  # (B, K)
        return torch.logsumexp(joint, dim=1)


class LearnedPrior(nn.Module):
    """A K-Gaussian diagonal mixture p(z [| label]) whose means, scales and weights are
    trained with the VAE (one mixture per class for a conditional model)."""

    def __init__(self, components: int, dim: int, classes: int = 0) -> None:
        super().__init__()
        m = max(classes, 1)  # mixtures: one per class, or one
        self.means = nn.Parameter(torch.randn(m, components, dim))  # (M, K, D); init_module seeds it
        self.log_std = nn.Parameter(torch.zeros(m, components, dim))  # (M, K, D)
        self.logits = nn.Parameter(torch.zeros(m, components))  # (M, K) mixture weights, softmaxed

    def log_prob(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z [| label]) of latents (B, D), (B,)."""
        m = torch.zeros(len(z), dtype=torch.long) if label is None else label  # (B,) mixture
        mu, log_std = self.means[m], self.log_std[m]  # (B, K, D)
        d = (z[:, None, :] - mu) * torch.exp(-log_std)  # (B, K, D) standardised
        log_n = -0.5 * d.pow(2).sum(2) - log_std.sum(2) - 0.5 * z.shape[1] * math.log(2 * math.pi)
        return torch.logsumexp(log_n + torch.log_softmax(self.logits[m], dim=1), dim=1)

    @torch.no_grad()
    def copy_to(self, prior: MixturePrior) -> None:
        """Write this mixture into a MixturePrior's buffers, so the served graph samples from it."""
        cumulative = torch.cumsum(torch.softmax(self.logits, dim=1), dim=1)
        cumulative[:, -1] = 1.0  # float rounding must not leave the last component short
        prior.cumulative.copy_(cumulative)
        prior.means.copy_(self.means)
        prior.scale_tril.copy_(torch.diag_embed(torch.exp(self.log_std)))


class Sampler(nn.Module):
    """The served graph: standard normal noise z [, label] -> the prior's latent -> image."""

    def __init__(self, prior: MixturePrior | None, decoder: Decoder) -> None:
        super().__init__()
        self.prior = prior
        self.decoder = decoder

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        latent = z if self.prior is None else self.prior(z, label)  # (B, D)
        return self.decoder(latent, label)  # (B, C, H, W)


class VAE(nn.Module):
    """Encoder + decoder with a standard normal prior on z during training (a learned mixture
    with learned_prior); with prior_components, a Gaussian mixture fitted to the training
    latents to sample from."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        k = config.prior_components or config.learned_prior  # the served mixture's components
        self.prior = MixturePrior(k, config.latent_dim, config.num_classes) if k else None
        self.learned = (LearnedPrior(config.learned_prior, config.latent_dim, config.num_classes)
                        if config.learned_prior else None)

    def elbo_terms(
        self,
        image: torch.Tensor,
        label: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        prior: LearnedPrior | MixturePrior | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image (reconstruction, KL) in nats: one reparameterised z; KL to N(0, I)
        analytic, to a mixture (`prior`, else the learned one if any) the one-draw estimate
        log q(z|x) - log p(z).

        Reconstruction is the Bernoulli negative log-likelihood (BCE summed over pixels; the
        pixels are grey levels in [0, 1], used as Bernoulli targets as is customary).
        """
        mu, logvar = self.encoder(image, label)  # (B, D) each
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps  # (B, D)
        logits = self.decoder.logits(z, label)  # (B, C, H, W)
        bce = F.binary_cross_entropy_with_logits(logits, image, reduction="none")
        recon = bce.flatten(1).sum(dim=1)  # (B,)
        prior = prior if prior is not None else self.learned
        if prior is not None:
            log_q = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(dim=1)  # (B,)
            return recon, log_q - prior.log_prob(z, label)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)  # (B,) KL(q || N(0, I))
        return recon, kl

    def loss(
        self,
        image: torch.Tensor,
        label: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        kl_weight: float = 1.0,
    ) -> torch.Tensor:
        """Negative ELBO in nats per image, averaged over the batch (KL scaled by kl_weight
        during warm-up)."""
        recon, kl = self.elbo_terms(image, label, generator)
        return (recon + kl_weight * kl).mean()

    @torch.no_grad()
    def sample(
        self, n: int, label: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n images from the prior (the mixture when there is one), (n, C, H, W) in [0, 1]."""
        z = torch.randn(n, self.config.noise_dim, generator=generator)  # (n, D [+ 1])
        return Sampler(self.prior, self.decoder)(z, label)


def vae_graphs(model: nn.Module) -> dict[str, GraphSpec]:
    """Serving graph "model" (prior + decoder), "encoder" and the bare "decoder", with random
    example inputs."""
    c: VAEConfig = model.config

    def sampler_inputs(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return {"z": torch.randn(batch, c.noise_dim, generator=g), **example_label(c, batch, g)}

    def decoder_inputs(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return {"latent": torch.randn(batch, c.latent_dim, generator=g), **example_label(c, batch, g)}

    def encoder_inputs(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        image = torch.rand(batch, c.channels, c.height, c.width, generator=g)  # (B, C, H, W)
        return {"image": image, **example_label(c, batch, g)}

    return {
        "model": GraphSpec(Sampler(model.prior, model.decoder), sampler_inputs, ("image",)),
        "encoder": GraphSpec(model.encoder, encoder_inputs, ("mu", "logvar")),
        # the decoder alone: it decodes the encoder's mu (the serving graph's z is the prior's noise)
        "decoder": GraphSpec(model.decoder, decoder_inputs, ("image",)),
    }


VAE_SPEC = ModelSpec(
    kind="vae",
    loop=Loop.LATENT_SAMPLER.value,
    config_class=VAEConfig,
    build=VAE,
    graphs=vae_graphs,
    description="variational autoencoder; serves its prior and decoder: z ~ N(0, I) [, label] -> image",
)
