"""A denoising autoencoder for small images: noisy image -> small latent code -> clean image.

Read top to bottom: config, the noise model, the two encoder/decoder pairs (the seed's dense
MLP and a convolutional one with the same bottleneck), the model with its loss, then the spec.
The serving graph is the whole autoencoder: image (B, C, H, W) in [0, 1] -> denoised, alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genserve.export.core.layers import example_images, mlp
from genserve.export.core.spec import GraphSpec, ModelSpec
from genserve.protocol import Loop

ARCHS = ("conv", "dense")


@dataclass
class DAEConfig:
    arch: str = "conv"  # "conv" (strided convolutions) or "dense" (the seed's MLP); conv wins
    latent_dim: int = 32  # the bottleneck: small enough that noise cannot be copied through
    hidden: tuple[int, ...] = (32, 64)  # conv: channels per stride-2 stage; dense: MLP widths
    channels: int = 1
    height: int = 28
    width: int = 28

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)  # a config read back from JSON has a list
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")

    @property
    def pixels(self) -> int:
        return self.channels * self.height * self.width


def add_noise(
    image: torch.Tensor, sigma: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Additive Gaussian noise of std `sigma` (a float or one per image), clipped to [0, 1]."""
    sigma = torch.as_tensor(sigma, dtype=image.dtype).reshape(-1, *[1] * (image.dim() - 1))
    noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)
    return (image + sigma * noise).clamp(0.0, 1.0)


def conv_size(n: int, stages: int) -> int:
    """Side length after `stages` 3x3 stride-2 convolutions with padding 1."""
    for _ in range(stages):
        n = (n - 1) // 2 + 1
    return n


class ConvCoder(nn.Module):
    """Encoder (stride-2 convs -> linear to the code) and its mirror image as the decoder."""

    def __init__(self, config: DAEConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        widths = [c.channels, *c.hidden]
        self.side = (conv_size(c.height, len(c.hidden)), conv_size(c.width, len(c.hidden)))
        flat = c.hidden[-1] * self.side[0] * self.side[1]
        down: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=False):
            down += [nn.Conv2d(fan_in, fan_out, 3, stride=2, padding=1), nn.ReLU()]
        self.down = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, c.latent_dim))
        self.expand = nn.Sequential(nn.Linear(c.latent_dim, flat), nn.ReLU())
        up: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:0:-1], widths[-2::-1], strict=False):
            up += [nn.ConvTranspose2d(fan_in, fan_out, 4, stride=2, padding=1), nn.ReLU()]
        self.up = nn.Sequential(*up[:-1])  # no ReLU on the last layer: it makes logits

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.down(image)  # (B, latent_dim)

    def decode_logits(self, code: torch.Tensor) -> torch.Tensor:
        c = self.config
        h = self.expand(code).view(-1, c.hidden[-1], *self.side)  # (B, hidden[-1], h, w)
        logits = self.up(h)  # (B, C, h * 2^stages, w * 2^stages), at least (H, W)
        return logits[:, :, : c.height, : c.width]  # (B, C, H, W)


class DenseCoder(nn.Module):
    """The seed's autoencoder: an MLP down to the code and the reversed MLP back."""

    def __init__(self, config: DAEConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.down = nn.Sequential(mlp([c.pixels, *c.hidden]), nn.Linear(c.hidden[-1], c.latent_dim))
        widths = list(reversed(c.hidden))
        self.expand = mlp([c.latent_dim, *widths])
        self.head = nn.Linear(widths[-1], c.pixels)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.down(image.flatten(1))  # (B, latent_dim)

    def decode_logits(self, code: torch.Tensor) -> torch.Tensor:
        c = self.config
        return self.head(self.expand(code)).view(-1, c.channels, c.height, c.width)  # (B, C, H, W)


class DAE(nn.Module):
    """Denoiser: forward(noisy image) -> clean image in [0, 1]."""

    def __init__(self, config: DAEConfig) -> None:
        super().__init__()
        self.config = config
        self.coder = ConvCoder(config) if config.arch == "conv" else DenseCoder(config)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.coder.decode_logits(self.coder.encode(image))  # (B, C, H, W)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(image))  # (B, C, H, W) in [0, 1]

    def loss(self, noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Bernoulli reconstruction loss of the clean image, nats per image (as the VAE's)."""
        bce = F.binary_cross_entropy_with_logits(self.logits(noisy), clean, reduction="none")
        return bce.flatten(1).sum(dim=1).mean()


def dae_graphs(model: nn.Module) -> dict[str, GraphSpec]:
    """Serving graph "model": image -> denoised (ONNX forbids an output named like an input)."""
    return {"model": GraphSpec(model, example_images(model.config), ("denoised",))}


DAE_SPEC = ModelSpec(
    kind="dae",
    loop=Loop.IMAGE_TO_IMAGE.value,
    config_class=DAEConfig,
    build=DAE,
    graphs=dae_graphs,
    description="denoising autoencoder; serves noisy image -> code -> clean image in [0, 1]",
)
