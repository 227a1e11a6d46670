"""The family registry: kind -> ModelSpec. A new family is a file here plus one line below."""

from __future__ import annotations

from genserve.export.models.cnn_classifier import CNN_SPEC
from genserve.export.models.dae import DAE_SPEC
from genserve.export.models.dcgan import DCGAN_SPEC
from genserve.export.models.spec import GraphSpec, ModelSpec
from genserve.export.models.gpt import GPT_SPEC
from genserve.export.models.text_classifier import TEXT_CLASSIFIER_SPEC
from genserve.export.models.vae import VAE_SPEC

FAMILIES: dict[str, ModelSpec] = {
    VAE_SPEC.kind: VAE_SPEC,
    DAE_SPEC.kind: DAE_SPEC,
    CNN_SPEC.kind: CNN_SPEC,
    DCGAN_SPEC.kind: DCGAN_SPEC,
    TEXT_CLASSIFIER_SPEC.kind: TEXT_CLASSIFIER_SPEC,
    GPT_SPEC.kind: GPT_SPEC,
}

__all__ = ["FAMILIES", "GraphSpec", "ModelSpec"]
