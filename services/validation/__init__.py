"""Request validation, once, in the gateway, before anything is enqueued.

Each RPC's proto request becomes a pydantic model checked against the model's manifest and
the deployment's limits; a failure is an InvalidArgumentError whose message says what was
wrong and what is allowed. What passes becomes the task's per-request dict (`to_task`), which
the worker trusts. One module per family of RPC:

- `images`: GenerateImages, EncodeImages, Denoise, Classify of image classifiers
- `text_classification`: Classify of text classifiers
- `text_generation`: GenerateText, CompleteText, ScoreText
- `open_inference`: ModelInfer of the Open Inference Protocol (KServe v2)
- `models`: ModelService's SetDefaultVersion
- `common`: the RPC check, finite tensors, error messages, deadlines
"""

from __future__ import annotations

from genserve.services.validation.common import require_rpc, timeout_from
from genserve.services.validation.images import (EncodeImagesInput, GenerateImagesInput, ImagesInput,
                                                 classify_images, denoise, encode_images, generate_images)
from genserve.services.validation.models import default_version
from genserve.services.validation.text_classification import TextsInput, classify_texts
from genserve.services.validation.text_generation import (GenerateTextInput, ScoreTextInput, generate_text,
                                                          score_text)

__all__ = [
    "EncodeImagesInput", "GenerateImagesInput", "GenerateTextInput", "ImagesInput", "ScoreTextInput", "TextsInput", "classify_images",
    "classify_texts", "default_version", "denoise", "encode_images", "generate_images", "generate_text", "require_rpc", "score_text", "timeout_from",
]
