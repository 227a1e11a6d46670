"""Layers and example inputs more than one family uses: an MLP, one-hot label conditioning,
random images, random shifts (the digit classifier's and the VAE's augmentation).

The VAE's encoder and decoder and the denoiser's bottleneck are `mlp`s; the conditional VAE
and the GANs append a one-hot label with `with_label` and trace their graphs with
`example_label`; the image-in graphs (denoiser, classifier) trace with `example_images`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def with_label(x: torch.Tensor, label: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Append a one-hot label to a batch of vectors when the model is class-conditional."""
    if num_classes == 0:
        return x
    if label is None:
        raise ValueError(f"this model is class-conditional ({num_classes} classes): pass label")
    return torch.cat([x, F.one_hot(label, num_classes).to(x.dtype)], dim=1)  # (B, F + K)


ACTIVATIONS = ("relu", "elu", "gated")


def check_activation(activation: str) -> None:
    """Refuse an activation `mlp` does not know, naming the ones it does."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")


class GatedLinear(nn.Module):
    """A gated dense layer (Dauphin et al. 2017; the VampPrior paper's VAEs): one Linear to
    twice the width, its first half times the sigmoid of its second."""

    def __init__(self, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, 2 * fan_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.linear(x).chunk(2, dim=1)  # (B, fan_out) each
        return value * torch.sigmoid(gate)


def mlp(widths: list[int], activation: str = "relu") -> nn.Sequential:
    """Linear + ReLU (or ELU) between consecutive widths; "gated": GatedLinear layers."""
    check_activation(activation)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=False):
        if activation == "gated":
            layers.append(GatedLinear(fan_in, fan_out))
        else:
            layers += [nn.Linear(fan_in, fan_out), nn.ELU() if activation == "elu" else nn.ReLU()]
    return nn.Sequential(*layers)


def example_label(
    config: Any, batch: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """{"label": (B,) int64} for a conditional model (config.num_classes > 0), {} otherwise."""
    if config.num_classes == 0:
        return {}
    return {"label": torch.randint(config.num_classes, (batch,), generator=generator)}


def example_images(config: Any) -> Callable[[int, torch.Generator], dict[str, torch.Tensor]]:
    """make_inputs of a graph whose one input is "image": (B, C, H, W) uniform in [0, 1]."""

    def inputs(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return {"image": torch.rand(batch, config.channels, config.height, config.width, generator=g)}

    return inputs


def shift(
    images: torch.Tensor, generator: torch.Generator, max_shift: int
) -> torch.Tensor:
    """Translate each image by a random whole number of pixels in -max..max, zero-filled."""
    n, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4)  # (B, C, H + 2m, W + 2m)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)  # offsets into padded
    batch = torch.arange(n)[:, None, None]  # (B, 1, 1)
    rows = dy[:, None, None] + torch.arange(height)[None, :, None]  # (B, H, 1)
    cols = dx[:, None, None] + torch.arange(width)[None, None, :]  # (B, 1, W)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
