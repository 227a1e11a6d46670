"""The classifier's export side: fine-tuning, ONNX fp32 + int8, parity, scores, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genserve.export.families.textclf.build import choose_serving
from genserve.export.families.textclf.model import (
    TextClassifier,
    TextClassifierConfig,
    example_texts,
)
from genserve.export.families.textclf.train import FinetuneSettings, finetune, predict_torch
from genserve.repository import ModelRepository
from tests.textclf.conftest import MODEL, topic_rows


@pytest.fixture(scope="module")
def manifest(textclf_repo: Path):
    return ModelRepository(textclf_repo).resolve(MODEL)


def test_padding_never_changes_a_text_s_logits() -> None:
    """The PyTorch model gives a text the same logits alone and padded inside a batch."""
    torch.manual_seed(0)
    model = TextClassifier(TextClassifierConfig(n_layer=2, n_head=2, n_embd=32, n_inner=64, num_labels=3)).eval()
    feeds = example_texts(model.config, 5, torch.Generator().manual_seed(1))
    with torch.no_grad():
        batch = model(**feeds)
        for i in range(5):
            n = int(feeds["attention_mask"][i].sum())
            alone = model(feeds["input_ids"][i : i + 1, :n], feeds["attention_mask"][i : i + 1, :n])
            torch.testing.assert_close(alone[0], batch[i], atol=1e-5, rtol=0)


def test_manifest_records_both_graphs_scores_and_the_serving_choice(manifest) -> None:
    """The model role plus the other precision, held-out scores of each, parity, tokenizer."""
    serving = manifest.training["serving_graph"].split(":")[0]
    other = "int8" if serving == "fp32" else "fp32"
    assert set(manifest.files) == {"model", other} and manifest.loop == "text_classifier"
    assert manifest.labels == ["cooking", "finance", "sports"]
    for graph in ("pytorch", "fp32", "int8"):
        assert 0.0 <= manifest.metrics[f"heldout_macro_f1_{graph}"] <= 1.0
    assert manifest.metrics["heldout_accuracy"] == manifest.metrics[f"heldout_accuracy_{serving}"]
    assert serving == choose_serving({g: {"accuracy": manifest.metrics[f"heldout_accuracy_{g}"]} for g in ("fp32", "int8")})
    assert manifest.parity["fp32"] <= 1e-4
    assert manifest.preprocess["max_length"] == 48 and manifest.preprocess["tokenizer"] == "tokenizer.json"
    assert [i.name for i in manifest.files["model"].inputs] == ["input_ids", "attention_mask"]
    assert manifest.files["model"].inputs[0].shape == [-1, -1]  # dynamic batch and sequence


def test_the_tiny_model_learns_the_topics(manifest) -> None:
    """Fine-tuned for a few steps, the tiny BERT tells the three topics apart on held-out texts."""
    assert manifest.metrics["heldout_accuracy_fp32"] >= 0.9
    assert manifest.metrics["heldout_accuracy_int8"] >= 0.9


def test_int8_graph_is_smaller_and_the_published_tokenizer_does_not_pad(textclf_repo: Path, manifest) -> None:
    """Quantised weights shrink the file; tokenizer.json is saved without fixed padding."""
    version = textclf_repo / MODEL / manifest.version
    paths = {role: version / f.path for role, f in manifest.files.items()}
    int8 = paths["model"] if "fp32" in paths else paths["int8"]
    fp32 = paths.get("fp32", paths["model"])
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    tokenizer = json.loads((version / "tokenizer.json").read_text())
    assert tokenizer["padding"] is None and tokenizer["truncation"]["max_length"] == 48


@pytest.mark.parametrize(
    ("fp32", "int8", "serving"),
    [(0.90, 0.90, "int8"), (0.90, 0.89, "int8"), (0.90, 0.8899, "fp32"), (0.80, 0.85, "int8")],
)
def test_int8_serves_only_when_it_loses_at_most_one_point(fp32: float, int8: float, serving: str) -> None:
    """The rule: int8 when its held-out accuracy is within 1 point of fp32's; fp32 otherwise."""
    assert choose_serving({"fp32": {"accuracy": fp32}, "int8": {"accuracy": int8}}) == serving
    assert choose_serving({}) == "fp32"


def test_a_finished_checkpoint_is_reused_instead_of_training_again(tiny_backbone, tmp_path: Path) -> None:
    """train then export: the second call finds the checkpoint and returns the same weights."""
    from genserve.export.families.textclf.build import classifier_from

    texts, labels = zip(*topic_rows(per_label=8))
    y = np.array([sorted(set(labels)).index(label) for label in labels])
    settings = FinetuneSettings(epochs=1, batch_size=8, lr=1e-3, max_length=16, freeze_layers=1)
    runs = []
    for _ in range(2):
        model = classifier_from(tiny_backbone, 3, seed=0)
        runs.append(finetune(model, tiny_backbone.encoder(), list(texts), y, settings, checkpoint_dir=tmp_path, progress=False))
    assert runs[0].resumed_from == 0 and runs[1].resumed_from == 1 and runs[1].history == runs[0].history
    rows = tiny_backbone.encoder().encode(list(texts))
    np.testing.assert_array_equal(predict_torch(runs[0].model, rows), predict_torch(runs[1].model, rows))


def test_cached_frozen_states_do_not_depend_on_padding_and_give_the_model_s_logits() -> None:
    """A text's cached frozen-block states are the same alone and in a padded batch, and the
    trainable blocks on them give the full model's logits."""
    from genserve.export.families.textclf.train import forward_batch, frozen_features

    torch.manual_seed(0)
    model = TextClassifier(TextClassifierConfig(n_layer=3, n_head=2, n_embd=32, n_inner=64, num_labels=3))
    feeds = example_texts(model.config, 6, torch.Generator().manual_seed(2))
    rows = [ids[: int(mask.sum())].numpy() for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"])]
    batched = frozen_features(model, rows, layers=2)
    for row, states in zip(rows, batched):
        alone = frozen_features(model, [row], layers=2)[0]
        assert states.shape == (len(row), 32)
        torch.testing.assert_close(alone, states, atol=1e-5, rtol=0)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(forward_batch(model, batched, 2), model(**feeds), atol=1e-5, rtol=0)
