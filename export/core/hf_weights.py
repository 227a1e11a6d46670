"""Reading a Hugging Face checkpoint folder: its config.json and its weights, without transformers.

Both importers (families/gpt/hf.py, families/textclf/backbone.py) read through here, so either
takes every layout `save_pretrained` writes: one `model.safetensors`, sharded safetensors
(`model.safetensors.index.json` naming the shards) or `pytorch_model.bin`. Floating-point
tensors come back as float32; others (position ids, masks) keep their dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
_SAFETENSORS_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class UnsupportedCheckpointError(ValueError):
    """The folder is not a Hugging Face checkpoint of an architecture genserve can serve."""


def read_hf_config(directory: Path) -> dict[str, Any]:
    """The folder's config.json as a dict."""
    return json.loads((Path(directory) / CONFIG).read_text())


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint by its Hugging Face name, from whichever layout it has."""
    directory = Path(directory)
    if (directory / SAFETENSORS).is_file():
        return read_safetensors(directory / SAFETENSORS)
    if (directory / SAFETENSORS_INDEX).is_file():
        tensors: dict[str, torch.Tensor] = {}
        shards = json.loads((directory / SAFETENSORS_INDEX).read_text())["weight_map"].values()
        for shard in sorted(set(shards)):
            tensors.update(read_safetensors(directory / shard))
        return tensors
    if (directory / PYTORCH_BIN).is_file():
        state = torch.load(directory / PYTORCH_BIN, map_location="cpu", weights_only=True)
        return {name: _float32(tensor) for name, tensor in state.items()}
    raise FileNotFoundError(f"no {SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_BIN} in {directory}")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one .safetensors file (8-byte header size, JSON header, raw data)."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    body = memoryview(data)[8 + size :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise UnsupportedCheckpointError(f"{path.name}: tensor {name} has dtype {info['dtype']}")
        start, end = info["data_offsets"]
        flat = torch.frombuffer(bytearray(body[start:end]), dtype=_SAFETENSORS_DTYPES[info["dtype"]])
        tensors[name] = _float32(flat.reshape(info["shape"]))
    return tensors


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor
