"""`genserve import-hf` for BertForSequenceClassification: publish a user's classifier as it is.

No training: the checkpoint's encoder and head go through the same export, int8 twin, parity
check and manifest as a fine-tuned model (build.publish_classifier); labelled texts, when
given, score both graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genserve.export.core.hf_weights import read_hf_config
from genserve.export.data.labelled_texts import TextDataset, load_texts
from genserve.export.families.textclf.backbone import classifier_from, read_hf_bert
from genserve.export.families.textclf.build import Split, publish_classifier


def import_bert_classifier(hf_dir: Path, repo_root: Path, name: str, *, data_path: Path | None = None) -> Path:
    """Publish a BertForSequenceClassification checkpoint as it is (no training).

    `data_path`: labelled texts (CSV/JSONL, labels named as in the checkpoint's id2label) to
    score fp32 and int8 on; without them the fp32 graph serves (nothing shows what int8 loses).
    """
    hf = read_hf_config(hf_dir)
    if hf.get("problem_type") in ("multi_label_classification", "regression") or hf.get("num_labels") == 1:
        raise ValueError(f"{hf_dir}: only single-label classification is served (softmax over labels), "
                         f"got problem_type={hf.get('problem_type')}")
    backbone = read_hf_bert(hf_dir, pooling="cls")
    labels = backbone.labels or [f"LABEL_{i}" for i in range(backbone.config.num_labels)]
    if backbone.weights is None or not any(k.endswith("classifier.weight") for k in backbone.weights):
        raise ValueError(f"{hf_dir}: no classifier.weight in the checkpoint; is it a BertForSequenceClassification?")
    model = classifier_from(backbone, len(labels), seed=0)
    heldout = None if data_path is None else labelled_as(load_texts(data_path), labels)
    training = {
        "dataset": "none: imported from a Hugging Face checkpoint, not trained here",
        "start": backbone.description,
        "heldout": "none" if heldout is None else f"{data_path.name}: {len(heldout[1])} texts",
    }
    return publish_classifier(repo_root, name, model, backbone, labels, heldout, training)


def labelled_as(data: TextDataset, labels: list[str]) -> Split:
    """A user's labelled texts with label indices of the checkpoint's own label list."""
    unknown = sorted(set(data.label_names) - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the checkpoint's labels {labels}")
    index = np.array([labels.index(name) for name in data.label_names], dtype=np.int64)
    return data.texts, index[data.labels]
