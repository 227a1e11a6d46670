"""The one Hugging Face weight reader: every layout save_pretrained writes gives the same tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genserve.export.core.hf_weights import (
    UnsupportedCheckpointError,
    read_hf_config,
    read_hf_weights,
)

safetensors_torch = pytest.importorskip("safetensors.torch")

STATE = {
    "embeddings.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4),
    "head.weight": torch.linspace(-1, 1, 8, dtype=torch.float16).reshape(2, 4),
    "embeddings.position_ids": torch.arange(5, dtype=torch.int64)[None],
}


def assert_read_as_saved(read: dict[str, torch.Tensor]) -> None:
    assert set(read) == set(STATE)
    for name, tensor in STATE.items():
        expected = tensor.float() if tensor.is_floating_point() else tensor
        assert read[name].dtype == expected.dtype and torch.equal(read[name], expected), name


def test_plain_safetensors_are_read_floats_as_float32(tmp_path: Path) -> None:
    """model.safetensors: float tensors come back float32, integer ones keep their dtype."""
    safetensors_torch.save_file(STATE, str(tmp_path / "model.safetensors"))
    assert_read_as_saved(read_hf_weights(tmp_path))


def test_sharded_safetensors_are_read_from_their_index(tmp_path: Path) -> None:
    """model.safetensors.index.json: the shards it names are read and merged."""
    shards = {"model-00001-of-00002.safetensors": ["embeddings.weight"],
              "model-00002-of-00002.safetensors": ["head.weight", "embeddings.position_ids"]}
    weight_map = {}
    for shard, names in shards.items():
        safetensors_torch.save_file({n: STATE[n] for n in names}, str(tmp_path / shard))
        weight_map |= {n: shard for n in names}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert_read_as_saved(read_hf_weights(tmp_path))


def test_pytorch_bin_is_read(tmp_path: Path) -> None:
    """pytorch_model.bin (a torch.save'd state dict) reads the same as safetensors."""
    torch.save(STATE, tmp_path / "pytorch_model.bin")
    assert_read_as_saved(read_hf_weights(tmp_path))


def test_a_folder_without_weights_names_the_layouts(tmp_path: Path) -> None:
    """No weights at all: FileNotFoundError naming the three files looked for."""
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    assert read_hf_config(tmp_path)["architectures"] == ["GPT2LMHeadModel"]
    with pytest.raises(FileNotFoundError, match="model.safetensors.index.json"):
        read_hf_weights(tmp_path)


def test_an_unknown_safetensors_dtype_is_refused(tmp_path: Path) -> None:
    """A dtype the reader does not know is an UnsupportedCheckpointError, not garbage."""
    header = json.dumps({"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0")
    with pytest.raises(UnsupportedCheckpointError, match="F8_E4M3"):
        read_hf_weights(tmp_path)
