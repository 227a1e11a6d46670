"""The family registry: kind -> ModelSpec. A new family is a folder in families/ plus one line below."""

from __future__ import annotations

from genserve.export.families.digits.model import CNN_SPEC
from genserve.export.families.dae.model import DAE_SPEC
from genserve.export.families.dcgan.model import DCGAN_SPEC
from genserve.export.core.spec import GraphSpec, ModelSpec
from genserve.export.families.gpt.model import GPT_SPEC
from genserve.export.families.textclf.model import TEXT_CLASSIFIER_SPEC
from genserve.export.families.vae.model import VAE_SPEC

FAMILIES: dict[str, ModelSpec] = {
    VAE_SPEC.kind: VAE_SPEC,
    DAE_SPEC.kind: DAE_SPEC,
    CNN_SPEC.kind: CNN_SPEC,
    DCGAN_SPEC.kind: DCGAN_SPEC,
    TEXT_CLASSIFIER_SPEC.kind: TEXT_CLASSIFIER_SPEC,
    GPT_SPEC.kind: GPT_SPEC,
}

__all__ = ["FAMILIES", "GraphSpec", "ModelSpec"]
