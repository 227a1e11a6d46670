"""The held-out negative ELBO of a trained VAE (its sample grid is core/publishing.py's).

The held-out negative ELBO is estimated per image under the model's training prior: analytic
KL(q(z|x) || N(0, I)), or for a model with a learned mixture prior the one-draw Monte Carlo
log q(z|x) - log p(z), and a Monte Carlo reconstruction term: `samples` reparameterised
draws z ~ q(z|x) (one by default), never the mean of q. The noise comes from a seeded
generator, so the number is reproducible.

A model that samples from a fitted (ex-post) mixture prior (model.py) is also scored under
that prior, with the Monte Carlo KL at fresh draws of z. Both are bounds on a
log-likelihood, of the same decoder under two priors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genserve.export.families.vae.model import VAE


@dataclass(frozen=True)
class ElboReport:
    neg_elbo: float  # nats per image: recon + kl
    recon: float  # nats per image: Bernoulli negative log-likelihood of the pixels
    kl: float  # nats per image: KL(q(z|x) || N(0, I))
    mixture_neg_elbo: float | None = None  # nats per image under the fitted mixture prior, if any

    def metrics(self) -> dict[str, float]:
        """The manifest's `metrics` entries."""
        metrics = {
            "heldout_neg_elbo_nats": self.neg_elbo,
            "heldout_recon_nats": self.recon,
            "heldout_kl_nats": self.kl,
        }
        if self.mixture_neg_elbo is not None:
            metrics["heldout_neg_elbo_mixture_prior_nats"] = self.mixture_neg_elbo
        return metrics


@torch.no_grad()
def heldout_neg_elbo(
    model: VAE,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    batch_size: int = 500,
    samples: int = 1,
    seed: int = 0,
) -> ElboReport:
    """Mean negative ELBO (and its two parts) over held-out images, in nats per image."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    conditional = labels is not None and model.config.num_classes > 0
    y_all = torch.from_numpy(labels.astype(np.int64)) if conditional else None
    recon_sum, kl_sum, mixture_sum = 0.0, 0.0, 0.0
    for start in range(0, len(x_all), batch_size):
        x = x_all[start : start + batch_size]
        y = None if y_all is None else y_all[start : start + batch_size]
        for _ in range(samples):
            recon, kl = model.elbo_terms(x, y, g)  # (B,) each
            recon_sum += recon.sum().item() / samples
            kl_sum += kl.sum().item() / samples
            if model.prior is not None:
                mixture_sum += mixture_neg_elbo(model, x, y, g).sum().item() / samples
    n = len(x_all)
    mixture = mixture_sum / n if model.prior is not None else None
    return ElboReport(neg_elbo=(recon_sum + kl_sum) / n, recon=recon_sum / n, kl=kl_sum / n,
                      mixture_neg_elbo=mixture)


def mixture_neg_elbo(model: VAE, x: torch.Tensor, y: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    """Per-image negative ELBO (B,) under the model's served mixture prior, one draw z ~ q(z|x)."""
    recon, kl = model.elbo_terms(x, y, g, prior=model.prior)
    return recon + kl
