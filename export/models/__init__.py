"""The family registry: kind -> ModelSpec. A new family is a file here plus one line below."""

from __future__ import annotations

from genserve.export.models.spec import GraphSpec, ModelSpec
from genserve.export.models.vae import VAE_SPEC

FAMILIES: dict[str, ModelSpec] = {
    VAE_SPEC.kind: VAE_SPEC,
}

__all__ = ["FAMILIES", "GraphSpec", "ModelSpec"]
