"""The GPT in PyTorch and ONNX: the cache computes what a full recompute does, the export is
parity-checked on prefill and decode, the manifest carries what serving needs."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from genserve.export.core.onnx_export import read_metadata
from genserve.export.families.gpt.export import OnnxParityError, check_kv_parity, export_gpt
from genserve.export.families.gpt.model import GPT, GPTConfig, append_cache, attention_bias
from genserve.repository import ModelRepository, sha256_file
from tests.text.conftest import GPT_NAME


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=101, block_size=32, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()


def test_decoding_with_the_cache_matches_recomputing_the_prefix(model):
    """Prefill + one-token steps give the logits of running the whole prefix each time."""
    ids = torch.randint(101, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(ids)
        logits, past = model(ids[:, :5])
        steps = [logits[:, -1]]
        for t in range(5, 12):
            bias = attention_bias(torch.ones(1, t + 1, dtype=torch.int64), 1)
            logits, new = model(ids[:, t : t + 1], torch.tensor([[t]]), past, bias)
            past = append_cache(past, new)
            steps.append(logits[:, -1])
    torch.testing.assert_close(torch.stack(steps[:-1], 1), full[:, 4:11], atol=1e-5, rtol=0)


def test_masked_cache_columns_do_not_change_a_row(model):
    """Left padding and unwritten columns (masked, holding noise) leave a row's logits alone."""
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        alone, cache = model(ids[:, :2])
        alone_next, _ = model(ids[:, 2:], torch.tensor([[2]]), cache, attention_bias(torch.ones(1, 3, dtype=torch.int64), 1))
        noisy = [(torch.cat([torch.randn(1, 2, 3, 8), k, torch.randn(1, 2, 2, 8)], 2),
                  torch.cat([torch.randn(1, 2, 3, 8), v, torch.randn(1, 2, 2, 8)], 2)) for k, v in cache]
        mask = torch.tensor([[0, 0, 0, 1, 1, 0, 0, 1]])  # padding, 2 real tokens, 2 unwritten, the new one
        padded, _ = model(ids[:, 2:], torch.tensor([[2]]), noisy, attention_bias(mask, 1))
    torch.testing.assert_close(padded, alone_next, atol=1e-5, rtol=0)
    assert alone.shape == (1, 2, 101)


def test_export_checks_parity_and_stamps_the_metadata(model, tmp_path):
    """The exported graph matches PyTorch on prefill and decode; kind/loop/config ride along."""
    result = export_gpt(model, tmp_path)
    assert result.parity["model"] < 1e-4
    meta = read_metadata(result.paths["model"])
    assert meta["genserve.kind"] == "gpt" and meta["genserve.loop"] == "autoregressive"
    assert json.loads(meta["genserve.config"])["block_size"] == 32
    inputs, outputs = [s.name for s in result.inputs["model"]], [s.name for s in result.outputs["model"]]
    assert inputs == ["input_ids", "attention_mask", "position_ids", "past_key_0", "past_value_0", "past_key_1", "past_value_1"]
    assert outputs == ["logits", "present_key_0", "present_value_0", "present_key_1", "present_value_1"]


def test_a_graph_that_disagrees_with_pytorch_fails_the_export(model, tmp_path):
    """Parity is enforced: the same graph checked against other weights is refused."""
    path = export_gpt(model, tmp_path).paths["model"]
    with torch.no_grad():
        model.h[1].mlp.c_fc.bias += 0.5
    with pytest.raises(OnnxParityError, match="differs from PyTorch"):
        check_kv_parity(model, path)


def test_published_version_carries_tokenizer_metrics_and_parity(gpt_dir):
    """The manifest names the tokenizer (sha256 checked), held-out nats/token and bits/byte."""
    manifest = ModelRepository(gpt_dir.parent.parent).resolve(GPT_NAME)
    assert manifest.kind == "gpt" and manifest.loop == "autoregressive"
    pre = manifest.preprocess
    assert sha256_file(gpt_dir / pre["tokenizer"]) == pre["tokenizer_sha256"]
    assert pre["eos_token_id"] == 0 and pre["context"] == manifest.config["block_size"]
    m = manifest.metrics
    assert 0 < m["heldout_nats_per_token"] < np.log(manifest.config["vocab_size"])  # learned something
    assert m["heldout_bits_per_byte"] == pytest.approx(
        m["heldout_nats_per_token"] * m["heldout_tokens"] / np.log(2) / m["heldout_bytes"])
    assert manifest.parity["model"] < 1e-3
    assert (gpt_dir / "samples.txt").read_text().startswith("--- prompt")
    assert manifest.serving.intra_op_threads == 1  # a narrow model decodes fastest on one thread


def test_only_narrow_gpts_ask_for_one_thread():
    from genserve.export.families.gpt.build import SINGLE_THREAD_MAX_WIDTH, serving_hints
    from genserve.export.families.gpt.model import GPTConfig

    narrow, wide = (GPTConfig(n_embd=w, n_head=4) for w in (SINGLE_THREAD_MAX_WIDTH, 2 * SINGLE_THREAD_MAX_WIDTH))
    assert serving_hints(narrow).intra_op_threads == 1 and serving_hints(wide).intra_op_threads == 0
    assert serving_hints(wide).max_batch_size == 16


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers (dev extra)")
def test_hugging_face_gpt2_imports_with_the_same_logits(tmp_path):
    """A tiny random GPT2LMHeadModel saved by transformers serves the same logits from ONNX."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    from genserve.export.families.gpt.hf import import_gpt2

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(["a tiny corpus for a tiny tokenizer " * 20], vocab_size=300,
                                  special_tokens=["<|endoftext|>"])
    tokenizer.save_model(str(hf_dir))  # vocab.json + merges.txt, as GPT-2 ships
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tokenizer.get_vocab_size() + 2, n_positions=40, n_embd=32, n_layer=2,
                        n_head=4, eos_token_id=0, bos_token_id=0)
    hf_model = GPT2LMHeadModel(config).eval()
    hf_model.save_pretrained(hf_dir)

    published = import_gpt2(hf_dir, tmp_path / "repo", "mygpt", eval_tokens=256)

    ids = np.random.default_rng(0).integers(config.vocab_size, size=(2, 17))
    session = ort.InferenceSession(str(published / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.tile(np.arange(17), (2, 1))}
    feeds |= {f"past_{part}_{i}": np.zeros((2, 4, 0, 8), np.float32) for i in range(2) for part in ("key", "value")}
    with torch.no_grad():
        want = hf_model(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(session.run(["logits"], feeds)[0], want, atol=1e-4, rtol=0)
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["kind"] == "gpt" and manifest["config"]["block_size"] == 40
    assert manifest["metrics"]["heldout_tokens"] == 256
    shutil.rmtree(hf_dir)
