"""Differentiable augmentation for a GAN trained on few images (DiffAugment, Zhao et al. 2020).

The discriminator sees every image, real or generated, through the same random translation
and cutout, in its own step and in the generator's; the generator's gradient flows through
the augmentation. D can then no longer memorise the 4,500 training digits, and G is not
asked to draw translated or cut digits: the augmentation is applied to both sides alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def translate(images: torch.Tensor, g: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image (B, C, H, W) by whole pixels, up to ratio * side, filling with 0."""
    b, _, h, w = images.shape
    limit = torch.tensor([int(w * ratio), int(h * ratio)], dtype=images.dtype)
    shift = torch.randint(-int(limit.max()), int(limit.max()) + 1, (b, 2), generator=g)
    shift = shift.to(images.dtype).clamp(-limit, limit)  # (B, 2) pixels (x, y)
    theta = torch.zeros(b, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shift[:, 0] / w  # affine_grid's units: the image spans [-1, 1]
    theta[:, 1, 2] = -2.0 * shift[:, 1] / h
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def cutout(images: torch.Tensor, g: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of side ratio * side in each image (B, C, H, W)."""
    b, _, h, w = images.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h - ch + 1, (b, 1, 1), generator=g)
    left = torch.randint(0, w - cw + 1, (b, 1, 1), generator=g)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # (B, H, W)
    return images * (~inside).unsqueeze(1).to(images.dtype)


AUGMENTATIONS = {"translation": translate, "cutout": cutout}


def augment(images: torch.Tensor, policy: str, g: torch.Generator) -> torch.Tensor:
    """Apply the comma-separated AUGMENTATIONS of `policy` in order ("" leaves images be)."""
    for name in filter(None, policy.split(",")):
        images = AUGMENTATIONS[name](images, g)
    return images
