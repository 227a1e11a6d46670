"""Classify texts through the real thing: gateway on loopback, Redis, a `genserve worker` process."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from genserve.tensors import to_proto
from genserve.v1 import inference_pb2, models_pb2
from tests.textclf.conftest import MODEL

pytestmark = pytest.mark.integration

OBVIOUS = {"simmer the garlic in the sauce": "cooking", "the bank raised the interest on my loan": "finance",
           "the striker scored a late goal": "sports"}


def classify(gw, **fields) -> inference_pb2.ClassifyResponse:
    return gw.inference.Classify(inference_pb2.ClassifyRequest(model=MODEL, **fields), timeout=30)


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_texts_get_their_topic_label_with_a_probability(textclf_gateway) -> None:
    """One prediction per text, in order, naming the right topic; version resolved."""
    response = classify(textclf_gateway, texts=list(OBVIOUS))
    assert response.model == f"{MODEL}:1" and len(response.predictions) == 3
    assert [p.top[0].label for p in response.predictions] == list(OBVIOUS.values())
    assert all(len(p.top) == 1 and 1 / 3 < p.top[0].score <= 1.0 for p in response.predictions)


def test_top_k_returns_every_label_best_first_summing_to_one(textclf_gateway) -> None:
    """top_k = 3 lists all three labels once, by falling probability, adding up to 1."""
    for prediction in classify(textclf_gateway, texts=list(OBVIOUS), top_k=3).predictions:
        scores = [s.score for s in prediction.top]
        assert sorted({s.label for s in prediction.top}) == ["cooking", "finance", "sports"]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert [s.index for s in prediction.top] == [["cooking", "finance", "sports"].index(s.label) for s in prediction.top]


def test_concurrent_requests_are_batched_and_keep_their_own_answers(textclf_gateway) -> None:
    """32 concurrent requests of different lengths each get the labels they get alone."""
    texts = [f"{text} {'and then again ' * (i % 7)}" for i, text in enumerate(list(OBVIOUS) * 11)][:32]
    alone = [classify(textclf_gateway, texts=[t], top_k=3).predictions[0] for t in texts[:6]]
    futures = [textclf_gateway.inference.Classify.future(inference_pb2.ClassifyRequest(model=MODEL, texts=[t], top_k=3),
                                                         timeout=30) for t in texts]
    together = [f.result().predictions[0] for f in futures]
    for a, b in zip(alone, together[:6]):
        assert [s.label for s in a.top] == [s.label for s in b.top]
        np.testing.assert_allclose([s.score for s in a.top], [s.score for s in b.top], atol=1e-2)  # int8 scales per call
    stats = textclf_gateway.gateway.dispatcher.stats(f"{MODEL}:1")
    assert max(n for s in stats for n in s.requests_per_batch) > 1, "the 32 requests were never batched"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"texts": []}, "the number of texts must be 1..1024, got 0"),
        ({"texts": ["fine", "  "]}, "texts[1] is empty"),
        ({"texts": ["x" * 20_001]}, "texts[0] has 20001 characters; at most 20000"),
        ({"texts": ["goal"], "top_k": 4}, "top_k must be 1..3"),
        ({"images": to_proto(np.zeros((1, 1, 2, 2), dtype=np.float32))}, "classifies texts; give texts, not images"),
    ],
)
def test_bad_requests_are_invalid_and_say_what_is_allowed(textclf_gateway, fields, needle) -> None:
    """Empty lists or texts, oversize texts, a top_k past the labels and images are refused."""
    code, message = status_of(lambda: classify(textclf_gateway, **fields))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in message, message


def test_model_info_shows_held_out_scores_and_the_rpc(textclf_gateway) -> None:
    """GetModel reports the Classify RPC and the held-out accuracy and macro-F1 of each graph."""
    info = textclf_gateway.models.GetModel(models_pb2.GetModelRequest(model=MODEL), timeout=5)
    assert info.loop == "text_classifier" and list(info.rpcs) == ["Classify"]
    for key in ("heldout_accuracy", "heldout_macro_f1", "heldout_accuracy_int8", "heldout_accuracy_fp32"):
        assert 0.9 <= info.metrics[key] <= 1.0
