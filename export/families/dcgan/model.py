"""A DCGAN for small grey images (digits, faces), optionally class-conditional.

Read top to bottom: config, generator, discriminator, the GAN with its two losses, the spec.
The served generator is `average` (see below): z [, label] -> image in [0, 1]; it fits the VAE
decoder's signature, so the worker's latent_sampler loop serves it unchanged. The
discriminator only trains.

Stability and speed, chosen by measuring on MNIST and LFW with CPU budgets of a minute or two
(the alternatives tried are listed in build.py):
- spectral normalisation on every discriminator layer (Miyato et al. 2018): it bounds D's
  Lipschitz constant, so D cannot win outright and G's gradient never vanishes;
- one-sided label smoothing (real target 0.9, Salimans et al. 2016) on the non-saturating loss;
- nearest-neighbour upsampling + 3x3 convolutions in G instead of transposed convolutions,
  whose uneven overlap printed a speckle into every stroke;
- an auxiliary classifier head on D trained on the real digits' labels (Odena et al. 2017):
  it teaches D digit structure early. A conditional G is also trained to be classified as the
  class it was asked for; an unconditional G never sees a label;
- `average`: an exponential moving average of G's weights (Yazici et al. 2019), served
  instead of the last iterate, which wobbles from step to step; its batch-norm statistics are
  re-estimated after training so the served graph (eval mode, batch invariant) normalises
  with what the averaged weights produce.
The conditional model feeds a one-hot label to G and uses a projection discriminator
(Miyato & Koyama 2018): D(x, y) = w.h(x) + embed(y).h(x). With `label_from_latent` the same
model serves z alone: G reads its class from z[:, 0] (`class_of`), a mixture of the classes in
equal parts; the default digit GAN is one (build.py says why).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genserve.export.core.layers import example_label, with_label
from genserve.export.core.spec import GraphSpec, ModelSpec
from genserve.export.families.dcgan.augment import augment
from genserve.protocol import Loop


@dataclass
class GANConfig:
    latent_dim: int = 64
    features: int = 32  # channels of G's last hidden stage and D's first; the next stage doubles
    d_features: int = 0  # D's first stage alone (0: `features`); the gan: 32, with G at 48
    channels: int = 1
    height: int = 28
    width: int = 28
    num_classes: int = 0  # 0: unconditional; K > 0: G takes a one-hot label, D projects it
    label_from_latent: bool = False  # with num_classes: no label input, z[:, 0] picks the class
    aux_classes: int = 0  # K > 0: D also classifies real images into K classes (needs labels)
    aux_weight: float = 1.0  # weight of the auxiliary classification loss on D (real images)
    aux_weight_g: float | None = None  # weight of G's (its fakes as their class); None: aux_weight
    real_label: float = 0.9  # one-sided label smoothing: D's target for real images
    average_decay: float = 0.995  # EMA of G's weights per step: ~200 steps of memory
    average_start: int = 0  # G's steps before the average starts; until then it copies G
    lr: float = 1e-3  # Adam's for G; 2e-4 (the DCGAN paper's) learned 2-3x slower per step here
    d_lr_scale: float = 1.0  # D's learning rate is lr times this (two time-scale update rule)
    betas: tuple[float, float] = (0.5, 0.999)  # the DCGAN paper's Adam: a short momentum memory
    loss: str = "bce"  # "bce": non-saturating BCE; "hinge": hinge loss (Lim & Ye 2017; real_label unused)
    minibatch_std: bool = False  # D sees its features' std over the batch (Karras et al. 2018)
    augment: str = ""  # DiffAugment policy for D's inputs, e.g. "translation,cutout" (augment.py)
    clusters: bool = False  # label-free: the classes are k-means clusters of the training images
    cluster_shares: bool = False  # with clusters: z[:, 0] picks a cluster as often as the data has it
    class_weights: tuple[float, ...] = ()  # with label_from_latent: each class's share; (): equal
    # bf16 autocast where the CPU has bf16 (core/training.py's training_precision); False: fp32
    mixed_precision: bool = True

    @property
    def base(self) -> tuple[int, int]:
        """G's first feature map: two 2x upsamplings reach at least (H, W)."""
        return -(-self.height // 4), -(-self.width // 4)


def class_of(z: torch.Tensor, classes: int, weights: tuple[float, ...] = ()) -> torch.Tensor:
    """The class a latent picks when the class is part of the latent: z[:, 0] through the normal
    CDF, cut into `classes` equal slices, so z ~ N(0, I) picks every class with probability 1/K;
    with `weights` (K shares summing to 1) the slices are that wide instead."""
    u = 0.5 * (1.0 + torch.erf(z[:, 0] / math.sqrt(2.0)))  # (B,) uniform in (0, 1)
    if not weights:
        return torch.clamp((u * classes).long(), max=classes - 1)  # (B,) int64
    edges = torch.tensor(weights, dtype=u.dtype).cumsum(0)[:-1]  # (K - 1,) inner slice ends
    return (u.unsqueeze(1) >= edges).sum(dim=1)  # (B,) int64: the edges below u


def down_size(n: int) -> int:
    """Side after two 4x4 stride-2 convolutions with padding 1."""
    for _ in range(2):
        n = (n - 2) // 2 + 1
    return n


class Generator(nn.Module):
    """z (B, D) [, label (B,)] -> image (B, C, H, W) in [0, 1]; label_from_latent: z only."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        wide = 2 * c.features
        self.project = nn.Linear(c.latent_dim + c.num_classes, wide * c.base[0] * c.base[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(wide),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(wide, c.features, 3, padding=1),
            nn.BatchNorm2d(c.features),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c.features, c.channels, 3, padding=1),
        )

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        if c.label_from_latent:
            label = class_of(z, c.num_classes, tuple(c.class_weights))  # (B,)
        h = self.project(with_label(z, label, c.num_classes))  # (B, 2F * h0 * w0)
        logits = self.body(h.view(-1, 2 * c.features, *c.base))  # (B, C, 4 h0, 4 w0)
        top = (logits.shape[2] - c.height) // 2  # centre crop when H is not a multiple of 4
        left = (logits.shape[3] - c.width) // 2
        return torch.sigmoid(logits[:, :, top : top + c.height, left : left + c.width])


class Discriminator(nn.Module):
    """image (B, C, H, W) -> features h; h [, label] -> realness logit; h -> class logits."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        side = down_size(c.height) * down_size(c.width)
        f = c.d_features or c.features
        flat = (2 * f + int(c.minibatch_std)) * side
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(c.channels, f, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(f, 2 * f, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
        )
        self.head = spectral_norm(nn.Linear(flat, 1))
        self.embed = spectral_norm(nn.Embedding(c.num_classes, flat)) if c.num_classes else None
        self.classifier = spectral_norm(nn.Linear(flat, c.aux_classes)) if c.aux_classes else None

    def features(self, image: torch.Tensor) -> torch.Tensor:
        h = self.body(image * 2.0 - 1.0)  # (B, 2F, h, w); inputs centred on 0
        if self.config.minibatch_std:
            # one more feature map: how much the batch varies, so D can see a collapsed G
            spread = h.std(dim=0).mean().expand(h.shape[0], 1, *h.shape[2:])  # (B, 1, h, w)
            h = torch.cat([h, spread], dim=1)
        return h.flatten(1)  # (B, flat)

    def realness(self, h: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        out = self.head(h).squeeze(1)  # (B,)
        if self.embed is not None:
            out = out + (self.embed(label) * h).sum(dim=1)  # projection: embed(y) . h(x)
        return out

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.realness(self.features(image), label)  # (B,) logits


class GAN(nn.Module):
    """Generator and discriminator trained against each other, and `average`, the served G."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.average = copy.deepcopy(self.generator).requires_grad_(False)

    def d_loss(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        real_class: torch.Tensor | None = None,
        fake_class: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """BCE with real -> real_label (smoothed), fake -> 0 (or the hinge loss), each projected
        on its class when D is conditional; plus D's classification of the real images when it
        has that head. With `augment`, D sees both through the same random augmentations."""
        d, c = self.discriminator, self.config
        if c.augment:
            real, fake = augment(real, c.augment, generator), augment(fake, c.augment, generator)
        h_real = d.features(real)  # (B, flat)
        conditional = c.num_classes > 0
        on_real = d.realness(h_real, real_class if conditional else None)  # (B,)
        on_fake = d(fake, fake_class if conditional else None)  # (B,)
        if c.loss == "hinge":
            loss = F.relu(1.0 - on_real).mean() + F.relu(1.0 + on_fake).mean()
        else:
            loss = F.binary_cross_entropy_with_logits(on_real, torch.full_like(on_real, c.real_label))
            loss = loss + F.binary_cross_entropy_with_logits(on_fake, torch.zeros_like(on_fake))
        if d.classifier is not None and real_class is not None:
            loss = loss + c.aux_weight * F.cross_entropy(d.classifier(h_real), real_class)
        return loss

    def g_loss(
        self,
        fake: torch.Tensor,
        fake_class: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Non-saturating: G maximises log D(G(z)) rather than minimising log(1 - D(G(z)))
        (hinge: G maximises D(G(z))); a conditional G must also be classified by D's head as
        the class it was asked for."""
        d, c = self.discriminator, self.config
        if c.augment:
            fake = augment(fake, c.augment, generator)
        h = d.features(fake)
        on_fake = d.realness(h, fake_class if c.num_classes else None)
        if c.loss == "hinge":
            loss = -on_fake.mean()
        else:
            loss = F.binary_cross_entropy_with_logits(on_fake, torch.ones_like(on_fake))
        if d.classifier is not None and c.num_classes:
            weight = c.aux_weight if c.aux_weight_g is None else c.aux_weight_g
            loss = loss + weight * F.cross_entropy(d.classifier(h), fake_class)
        return loss

    @torch.no_grad()
    def update_average(self, step: int | None = None) -> None:
        """average <- decay * average + (1 - decay) * generator, parameters only; at G's step
        `step` (counted from 1) before `average_start`, average <- generator."""
        c = self.config
        weight = 1.0 if step is not None and step <= c.average_start else 1.0 - c.average_decay
        for mean, live in zip(self.average.parameters(), self.generator.parameters(), strict=True):
            mean.lerp_(live, weight)

    @torch.no_grad()
    def sample(
        self, n: int, label: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n images of the served generator from z ~ N(0, I), (n, C, H, W) in [0, 1]."""
        z = torch.randn(n, self.config.latent_dim, generator=generator)  # (n, D)
        return self.average(z, label)


def gan_graphs(model: nn.Module) -> dict[str, GraphSpec]:
    """Serving graph "model": the averaged generator, z [, label] -> image."""
    c: GANConfig = model.config

    def inputs(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        z = torch.randn(batch, c.latent_dim, generator=g)
        return {"z": z} if c.label_from_latent else {"z": z, **example_label(c, batch, g)}

    return {"model": GraphSpec(model.average, inputs, ("image",))}


DCGAN_SPEC = ModelSpec(
    kind="dcgan",
    loop=Loop.LATENT_SAMPLER.value,
    config_class=GANConfig,
    build=GAN,
    graphs=gan_graphs,
    description="DCGAN; serves the (weight-averaged) generator: z ~ N(0, I) [, label] -> image",
)
