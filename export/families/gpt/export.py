"""Export a GPT with its key/value cache to one ONNX graph and prove it on prefill and decode.

The graph (see `genserve.export.families.gpt.model`) serves both phases: prefill with an empty past
(P = 0) and decode steps that feed back `present` as `past`. Dynamic axes: batch, new tokens,
cache length. Traced with the legacy TorchScript exporter (`dynamo=False`), as the other
families, opset 17.

Parity is checked where serving can go wrong, each step fed ONNX Runtime's own cache from
the step before (as the worker does), against PyTorch on the same inputs:

- prefill of a prompt alone (batch 1, empty past), logits and cache;
- DECODE_STEPS greedy decode steps continuing it;
- a ragged batch laid out as the worker lays it out (a shorter prompt left-padded beside the
  first, unwritten columns holding noise, all masked): one decode step, whose rows must
  match each sequence decoded alone.

Tolerance PARITY_ATOL = 1e-3 on logits and cache. Both sides compute in float32; different
summation orders (ONNX Runtime's fused MatMul/Softmax vs PyTorch's kernels) give ~1e-6
relative error per op, which over a dozen layers reaches ~1e-5..1e-4 on logits of size ~10.
1e-3 leaves 10x headroom for GPT-2-sized imports, while every export bug this catches (a wrong
mask, a position off by one, a cache concatenated on the wrong axis) moves logits by O(1).
For sampling, 1e-3 in a logit changes a token probability by at most 0.1% of itself.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from genserve.export.core.onnx_export import (
    OPSET,
    ExportResult,
    OnnxParityError,
    graph_signature,
    onnx_metadata,
)
from genserve.export.families.gpt.model import (
    GPT,
    GPT_SPEC,
    GPTConfig,
    GPTWithCache,
    cache_names,
    empty_past,
)

PARITY_ATOL = 1e-3  # max abs difference allowed on logits and cache (module docstring)
DECODE_STEPS = 8  # decode steps checked after the prefill


def dynamic_axes(config: GPTConfig) -> dict[str, dict[int, str]]:
    axes = {
        "input_ids": {0: "batch", 1: "new"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "new"},
        "logits": {0: "batch", 1: "new"},
    }
    axes.update({name: {0: "batch", 2: "past"} for name in cache_names(config, "past")})
    axes.update({name: {0: "batch", 2: "total"} for name in cache_names(config, "present")})
    return axes


def export_gpt(model: GPT, out_dir: Path, *, atol: float = PARITY_ATOL, seed: int = 0) -> ExportResult:
    """model.onnx in out_dir with kind/loop/config metadata; parity-checked or OnnxParityError."""
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    graph = GPT_SPEC.graphs(model)["model"]
    example = graph.make_inputs(2, torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")  # tracer warnings about shape arithmetic are expected
        torch.onnx.export(
            graph.module, tuple(example.values()), str(path), input_names=list(example),
            output_names=list(graph.outputs), dynamic_axes=dynamic_axes(model.config), opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, onnx_metadata(GPT_SPEC, model.config, "model"))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    worst = check_kv_parity(model, path, atol, seed)
    inputs, outputs = graph_signature(path)
    return ExportResult({"model": path}, {"model": inputs}, {"model": outputs}, {"model": worst})


class _Both:
    """Runs one step in PyTorch and ONNX Runtime and keeps the worst difference seen."""

    def __init__(self, model: GPT, path: Path) -> None:
        self.module = GPTWithCache(model).eval()
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.worst, self.where = 0.0, ""

    def step(self, what: str, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray,
             cache: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(logits, cache) from ONNX Runtime, after comparing every output with PyTorch."""
        feeds = dict(zip(self.inputs, [ids, mask, positions, *cache], strict=True))
        with torch.no_grad():
            want = self.module(*(torch.from_numpy(feeds[name]) for name in self.inputs))
        got = self.session.run(self.outputs, feeds)
        for name, w, g in zip(self.outputs, want, got, strict=True):
            if g.shape != tuple(w.shape):
                raise OnnxParityError(f"{what}: {name} has shape {g.shape} in ONNX Runtime, {tuple(w.shape)} in PyTorch")
            diff = float(np.abs(g - w.numpy()).max())
            if diff > self.worst:
                self.worst, self.where = diff, f"{name} at {what}"
        return got[0], got[1:]


def empty_cache(config: GPTConfig, batch: int = 1) -> list[np.ndarray]:
    return [t.numpy() for t in empty_past(config, batch)]


def check_kv_parity(model: GPT, path: Path, atol: float = PARITY_ATOL, seed: int = 0) -> float:
    """Prefill, DECODE_STEPS decode steps and a ragged batch step; the worst max abs diff."""
    c = model.config
    rng = np.random.default_rng(seed)
    both = _Both(model, path)
    ones = lambda n: np.ones((1, n), dtype=np.int64)  # noqa: E731
    prompt = rng.integers(c.vocab_size, size=min(11, c.block_size - DECODE_STEPS - 2)).tolist()
    logits, cache = both.step("prefill", np.array([prompt]), ones(len(prompt)), np.arange(len(prompt))[None],
                              empty_cache(c))
    ids = list(prompt)
    for step in range(DECODE_STEPS):  # greedy, feeding back ONNX Runtime's own keys and values
        ids.append(int(logits[0, -1].argmax()))
        logits, new = both.step(f"decode step {step + 1}", np.array([[ids[-1]]]), ones(len(ids)),
                                np.array([[len(ids) - 1]]), cache)
        cache = [np.concatenate([old, kv], axis=2) for old, kv in zip(cache, new)]
    _, short_cache = both.step("prefill of a short prompt", np.array([prompt[:3]]), ones(3), np.arange(3)[None],
                               empty_cache(c))
    long_next, short_next, n = int(logits[0, -1].argmax()), 7 % c.vocab_size, cache[0].shape[2]
    long_alone, _ = both.step("the long sequence alone", np.array([[long_next]]), ones(n + 1), np.array([[n]]), cache)
    short_alone, _ = both.step("the short sequence alone", np.array([[short_next]]), ones(4), np.array([[3]]), short_cache)
    # The worker's layout: the short row left-padded, then two columns not written yet; the
    # masked columns hold noise, which must not matter.
    width = n + 2
    mask = np.zeros((2, width + 1), dtype=np.int64)
    mask[0, :n], mask[1, n - 3 : n], mask[:, width] = 1, 1, 1
    merged = []
    for long, short in zip(cache, short_cache):
        buffer = rng.standard_normal((2, c.n_head, width, c.head_dim)).astype(np.float32)
        buffer[0, :, :n], buffer[1, :, n - 3 : n] = long[0], short[0]
        merged.append(buffer)
    ragged, _ = both.step("a ragged batch", np.array([[long_next], [short_next]]), mask, np.array([[n], [3]]), merged)
    for row, alone in ((0, long_alone), (1, short_alone)):
        diff = float(np.abs(ragged[row] - alone[0]).max())
        if diff > both.worst:
            both.worst, both.where = diff, f"row {row} of a ragged batch against the same sequence alone"
    if both.worst > atol:
        raise OnnxParityError(
            f"{path.name}: ONNX Runtime differs from PyTorch by {both.worst:.3g} (max abs, "
            f"{both.where}); allowed {atol:g}"
        )
    return both.worst
