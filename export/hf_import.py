"""`genserve import-hf DIR --name NAME`: serve your own Hugging Face checkpoint from a local folder.

The first architecture named in the folder's config.json picks the importer, and the importer
publishes a version exactly as a model built here would be (ONNX graphs with parity checked
against PyTorch, manifest, tokenizer beside the graphs):

    BertForSequenceClassification -> the text_classifier path (fp32 + int8, Classify)
    GPT2LMHeadModel               -> the autoregressive path (GenerateText, ScoreText)

Nothing is downloaded: the folder must hold config.json, the weights (model.safetensors or
pytorch_model.bin) and the tokenizer files that `save_pretrained` writes.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

# architecture -> "module:function" of its importer, imported only when that architecture is asked for
IMPORTERS: dict[str, str] = {
    "BertForSequenceClassification": "genserve.export.families.textclf.build:import_bert_classifier",
    "GPT2LMHeadModel": "genserve.export.families.gpt.hf:import_gpt2",
}
TAKES_DATA = {"BertForSequenceClassification"}  # importers that can score labelled held-out texts


class UnsupportedCheckpointError(ValueError):
    """The folder is not a Hugging Face checkpoint of an architecture genserve can serve."""


def detect_architecture(hf_dir: Path) -> str:
    """The architecture named in hf_dir/config.json, if genserve has an importer for it."""
    config_file = Path(hf_dir) / "config.json"
    if not config_file.is_file():
        raise UnsupportedCheckpointError(f"{hf_dir} has no config.json; pass a folder written by save_pretrained")
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    supported = ", ".join(sorted(IMPORTERS))
    if not architectures:
        raise UnsupportedCheckpointError(f"{config_file} names no architecture; supported: {supported}")
    if architectures[0] not in IMPORTERS:
        raise UnsupportedCheckpointError(f"{config_file} is a {architectures[0]}; supported: {supported}")
    return architectures[0]


def import_hf(hf_dir: Path, repo_root: Path, name: str, *, data_path: Path | None = None) -> Path:
    """Publish the next version of `name` from the checkpoint in hf_dir; returns its directory."""
    architecture = detect_architecture(hf_dir)
    if data_path is not None and architecture not in TAKES_DATA:
        raise UnsupportedCheckpointError(f"--data scores classifiers only; {hf_dir} is a {architecture}")
    module_name, function = IMPORTERS[architecture].split(":")
    try:
        importer = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise UnsupportedCheckpointError(f"the importer for {architecture} ({IMPORTERS[architecture]}) "
                                         f"is not available: {exc}") from exc
    extra = {"data_path": Path(data_path)} if data_path is not None else {}
    return importer(Path(hf_dir), Path(repo_root), name, **extra)
