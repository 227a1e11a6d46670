"""Serving loops: how a worker turns requests for one kind of model into ONNX feeds and back.

The manifest names the loop; `HANDLERS[(loop, op)]` is the code that runs it, one handler per
(loop, op) pair of `genserve.protocol.LOOPS`. A new model family that fits an existing loop
changes nothing here. Requests arrive validated by the gateway (services.validation); a
handler trusts them and turns what still fails into an internal error of that request alone.

    images.py               latent_sampler, image_to_image, image_classifier
    text_classification.py  text_classifier
    text_generation.py      autoregressive (GenerateText, CompleteText, ScoreText)
"""

from __future__ import annotations

from typing import Any, Callable

from genserve.protocol import Loop, Op, Outcome
from genserve.workers.batching import CallLog
from genserve.workers.loops.images import classify_images, denoise, generate_images
from genserve.workers.loops.text_classification import classify_texts
from genserve.workers.loops.text_generation import generate_text, score_text
from genserve.workers.runtime import LoadedModel

Handler = Callable[[LoadedModel, list[dict[str, Any]], CallLog], list[Outcome]]

HANDLERS: dict[tuple[Loop, Op], Handler] = {
    (Loop.LATENT_SAMPLER, Op.GENERATE_IMAGES): generate_images,
    (Loop.IMAGE_TO_IMAGE, Op.DENOISE): denoise,
    (Loop.IMAGE_CLASSIFIER, Op.CLASSIFY): classify_images,
    (Loop.TEXT_CLASSIFIER, Op.CLASSIFY): classify_texts,
    (Loop.AUTOREGRESSIVE, Op.GENERATE_TEXT): generate_text,
    (Loop.AUTOREGRESSIVE, Op.SCORE_TEXT): score_text,
}
