"""Gateway-side validation of Classify for text classifiers (pure: no services)."""

from __future__ import annotations

import pytest

from genserve.errors import InvalidArgumentError
from genserve.repository import Manifest, OnnxFile
from genserve.services.validation import classify_texts
from genserve.settings import LimitSettings
from genserve.v1 import inference_pb2

MANIFEST = Manifest(name="topics", version="1", kind="text_classifier", loop="text_classifier",
                    files={"model": OnnxFile(path="model.onnx", sha256="0" * 64, inputs=[], outputs=[])},
                    labels=["cooking", "finance", "sports"])


def validate(limits: LimitSettings | None = None, **fields):
    return classify_texts(inference_pb2.ClassifyRequest(model="topics", **fields), MANIFEST, limits or LimitSettings())


def test_valid_texts_become_a_task_counting_one_sample_per_text() -> None:
    """Texts pass as they are; top_k 0 means 1; samples() counts texts for the batcher."""
    params = validate(texts=["a", "b c"])
    assert params.to_task() == {"texts": ["a", "b c"], "top_k": 1} and params.samples() == 2
    assert validate(texts=["a"], top_k=3).to_task()["top_k"] == 3


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"texts": []}, "texts: the number of texts must be 1..2, got 0"),
        ({"texts": ["a", "b", "c"]}, "the number of texts must be 1..2, got 3"),
        ({"texts": ["ok", "\n\t "]}, "texts[1] is empty"),
        ({"texts": ["x" * 11]}, "texts[0] has 11 characters; at most 10 are allowed"),
        ({"texts": ["ok"], "top_k": 4}, "top_k must be 1..3 (the model's labels), got 4"),
        ({"texts": ["ok"], "png": [b"\x89PNG"]}, "classifies texts; give texts, not images"),
    ],
)
def test_bad_text_requests_say_what_is_allowed(fields: dict, needle: str) -> None:
    """Count, blank texts, length, top_k and images are checked against limits and labels."""
    with pytest.raises(InvalidArgumentError) as info:
        validate(LimitSettings(max_texts=2, max_text_chars=10), **fields)
    assert needle in str(info.value)
