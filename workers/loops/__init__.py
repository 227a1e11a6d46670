"""Serving loops: how a worker turns requests for one kind of model into ONNX feeds and back.

The manifest names the loop; `HANDLERS[(loop, op)]` is the code that runs it, one handler per
(loop, op) pair of `genserve.protocol.LOOPS`. A new model family that fits an existing loop
changes nothing here. Requests arrive validated by the gateway (services.validation); a
handler trusts them and turns what still fails into an internal error of that request alone.

    images.py               latent_sampler (GenerateImages, EncodeImages), image_to_image, image_classifier
    text_classification.py  text_classifier
    text_generation.py      autoregressive (GenerateText, CompleteText, ScoreText)
    open_inference.py       the Open Inference Protocol's ModelInfer on the tensor loops
"""

from __future__ import annotations

from typing import Any, Callable

from genserve.protocol import OPEN_INFERENCE_LOOPS, Loop, Op, Outcome
from genserve.workers.batching import CallLog
from genserve.workers.loops.images import classify_images, denoise, encode_images, generate_images
from genserve.workers.loops.open_inference import infer_tensors
from genserve.workers.loops.text_classification import classify_texts
from genserve.workers.loops.text_generation import generate_text, score_text
from genserve.workers.runtime import LoadedModel

Handler = Callable[[LoadedModel, list[dict[str, Any]], CallLog], list[Outcome]]

HANDLERS: dict[tuple[Loop, Op], Handler] = {
    (Loop.LATENT_SAMPLER, Op.GENERATE_IMAGES): generate_images,
    (Loop.LATENT_SAMPLER, Op.ENCODE_IMAGES): encode_images,
    (Loop.IMAGE_TO_IMAGE, Op.DENOISE): denoise,
    (Loop.IMAGE_CLASSIFIER, Op.CLASSIFY): classify_images,
    (Loop.TEXT_CLASSIFIER, Op.CLASSIFY): classify_texts,
    (Loop.AUTOREGRESSIVE, Op.GENERATE_TEXT): generate_text,
    (Loop.AUTOREGRESSIVE, Op.SCORE_TEXT): score_text,
}
# The Open Inference Protocol's op on every tensor loop (its own table, protocol.OPEN_INFERENCE_LOOPS).
HANDLERS.update({(loop, Op.INFER_TENSORS): infer_tensors for loop in OPEN_INFERENCE_LOOPS})
