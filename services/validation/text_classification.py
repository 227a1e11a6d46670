"""Classify for text classifiers: the texts' count and size within the deployment's limits."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from genserve.errors import InvalidArgumentError
from genserve.repository import Manifest
from genserve.services.validation.common import require_rpc, validate
from genserve.settings import LimitSettings
from genserve.v1 import inference_pb2


class TextsInput(BaseModel):
    """Texts for a text classifier's Classify, within the deployment's limits."""

    model_config = ConfigDict(frozen=True)

    texts: list[str]
    top_k: int = 1

    @field_validator("texts")
    @classmethod
    def _texts(cls, texts: list[str], info: ValidationInfo) -> list[str]:
        limits: LimitSettings = info.context["limits"]
        if not 1 <= len(texts) <= limits.max_texts:
            raise ValueError(f"the number of texts must be 1..{limits.max_texts}, got {len(texts)}")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty; each text needs at least one non-space character")
            if len(text) > limits.max_text_chars:
                raise ValueError(f"texts[{i}] has {len(text)} characters; at most {limits.max_text_chars} are allowed")
        return texts

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, top_k: int, info: ValidationInfo) -> int:
        labels = len(info.context["manifest"].labels)
        if top_k == 0:
            return 1
        if not 1 <= top_k <= labels:
            raise ValueError(f"top_k must be 1..{labels} (the model's labels), got {top_k}")
        return top_k

    def samples(self) -> int:
        return len(self.texts)

    def to_task(self) -> dict[str, Any]:
        return {"texts": list(self.texts), "top_k": self.top_k}


def classify_texts(request: inference_pb2.ClassifyRequest, manifest: Manifest, limits: LimitSettings) -> TextsInput:
    """Texts for a text classifier; the worker tokenises them (workers/loops/text_classification.py)."""
    require_rpc(manifest, "Classify")
    if request.images.shape or request.png:
        raise InvalidArgumentError(f"model {manifest.ref} classifies texts; give texts, not images")
    return validate(TextsInput, {"texts": list(request.texts), "top_k": request.top_k}, manifest, limits)
