"""A text classifier to ONNX: the fp32 graph, its int8 twin, parity and held-out scores.

The fp32 graph is traced with the legacy exporter (as every genserve graph) with dynamic
batch and sequence axes, so one file serves any batch padded to its longest text. Its
parity with PyTorch is checked on real held-out texts in ragged, padded batches of several
sizes. The int8 graph is ONNX Runtime's dynamic quantisation of the fp32 one: weights of
MatMul/Gather stored as int8 (a scale per output channel), activations quantised per call,
no calibration data needed.
Both graphs are scored on the held-out texts through the worker's own tokenisation and
padding (genserve.tokenization) in a session with the worker's CPU options, so the numbers are
what the service answers.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from genserve.export.core.onnx_export import (
    OPSET,
    PARITY_ATOL,
    OnnxParityError,
    declare_output_shapes,
    onnx_metadata,
)
from genserve.export.core.spec import ModelSpec
from genserve.export.families.textclf.model import TextClassifier, example_texts
from genserve.export.families.textclf.train import predict_torch
from genserve.tokenization import pad_batch

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logits"
# texts per call when scoring, sorted by length: on 2 cores batches of 16 ran the held-out texts
# 1.4x faster than batches of 64 (less padding among the long texts cut at 256 tokens)
EVAL_BATCH = 16


def export_fp32(spec: ModelSpec, model: TextClassifier, path: Path) -> Path:
    """Trace (input_ids, attention_mask) -> logits with dynamic batch and sequence axes."""
    model.eval()
    example = example_texts(model.config, 2, torch.Generator().manual_seed(0))
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {OUTPUT: {0: "batch"}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # dynamo=False is chosen
        torch.onnx.export(model, tuple(example.values()), str(path), input_names=list(INPUTS),
                          output_names=[OUTPUT], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    stamp(path, spec, model, "fp32")
    return path


def stamp(path: Path, spec: ModelSpec, model: TextClassifier, precision: str) -> None:
    """Output shape (batch, num_labels), genserve metadata and the precision; then check."""
    proto = onnx.load(str(path))
    declare_output_shapes(proto, [(model.config.num_labels,)])
    metadata = onnx_metadata(spec, model.config, "model") | {"genserve.precision": precision}
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


# MatMuls left in fp32 by the int8 twin. Chosen on 300 TRAINING texts (serving truncation) of
# the 2026-11-30 build, by mean |int8 - fp32| logit: all quantised 0.088 (98.7% top-1 agreement);
# keeping one block's fc_out in fp32 cut it most for block 0 (0.077, 99.0%), 7% for blocks 1-2,
# ~1% for 3-5; keeping all six fc_out 0.060 but a third of the MatMul work in fp32. Block 0 is
# frozen pretrained MiniLM, so its sensitivity does not move between fine-tunings. Per-tensor
# weight scales were far worse (88.5% agreement), reduce_range and uint8 weights no better.
INT8_FP32_NODES = ("/encoder/blocks.0/fc_out/MatMul",)


def quantize_int8(spec: ModelSpec, model: TextClassifier, fp32: Path, path: Path) -> Path:
    """ONNX Runtime dynamic quantisation: int8 weights with a scale per output channel, uint8
    activations scaled per call, after ONNX Runtime's pre-processing (shape inference, graph
    optimisation); INT8_FP32_NODES stay fp32. On the docstring classifier per-tensor weight scales
    lost 2.4 points of held-out accuracy; per-channel scales after pre-processing lost 0 to 1.9."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_name(f"{path.stem}-prepared.onnx")
    logging.disable(logging.INFO)  # the quantiser logs a line per tensor at INFO
    try:
        quant_pre_process(str(fp32), str(prepared))
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=list(INT8_FP32_NODES))
    finally:
        logging.disable(logging.NOTSET)
        prepared.unlink(missing_ok=True)
    stamp(path, spec, model, "int8")
    return path


class ScoringSession:
    """An ONNX Runtime session on the CPU with a worker's options (export never imports workers)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


def session(path: Path, threads: int = 1) -> ScoringSession:
    """The graph as a worker loads it on the CPU (all graph optimisations, sequential execution,
    no spinning, one inter-op thread), with `threads` intra-op threads."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ScoringSession(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))


def predict_onnx(model: ScoringSession, rows: list[np.ndarray], pad_id: int = 0,
                 batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Logits (N, labels) in input order; batches of similar length, as the benchmark runs them."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    logits = None
    for start in range(0, len(rows), batch_size):
        idx = order[start : start + batch_size]
        out = model.run(pad_batch([rows[i] for i in idx], pad_id))[OUTPUT]
        logits = np.zeros((len(rows), out.shape[1]), dtype=np.float32) if logits is None else logits
        logits[idx] = out
    return logits


def predict_all(model: TextClassifier, graphs: dict[str, ScoringSession], rows: list[np.ndarray],
                pad_id: int = 0) -> dict[str, np.ndarray]:
    """Logits of PyTorch ("pytorch") and of each graph on the same padded batches: one pass each
    serves both the parity check and the scores (the post-training phase is mostly these passes)."""
    return {"pytorch": predict_torch(model, rows, EVAL_BATCH, pad_id)} | {
        name: predict_onnx(graph, rows, pad_id) for name, graph in graphs.items()}


def check_parity(logits: dict[str, np.ndarray], atol: float = PARITY_ATOL) -> dict[str, float]:
    """Max abs logit difference of each graph against PyTorch over every row (ragged texts padded
    to the longest of their batch); OnnxParityError when the fp32 graph's exceeds `atol` (int8's
    is only recorded)."""
    parity = {name: float(np.abs(out - logits["pytorch"]).max()) for name, out in logits.items() if name != "pytorch"}
    if parity.get("fp32", 0.0) > atol:
        raise OnnxParityError(f"text classifier: ONNX Runtime differs from PyTorch by {parity['fp32']:.3g} "
                              f"(max abs logit); allowed {atol:g}")
    return parity


def classification_metrics(labels: np.ndarray, logits: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 (each label's F1 averaged with equal weight), both in [0, 1]."""
    predicted = logits.argmax(axis=1)
    f1 = []
    for k in range(num_labels):
        tp = float(np.sum((predicted == k) & (labels == k)))
        fp = float(np.sum((predicted == k) & (labels != k)))
        fn = float(np.sum((predicted != k) & (labels == k)))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": float(np.mean(predicted == labels)), "macro_f1": float(np.mean(f1))}


def score_all(logits: dict[str, np.ndarray], labels: np.ndarray, num_labels: int) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of each system's logits; int8's top-1 agreement with fp32."""
    scores = {name: classification_metrics(labels, out, num_labels) for name, out in logits.items()}
    if "int8" in logits and "fp32" in logits:
        agree = float(np.mean(logits["int8"].argmax(1) == logits["fp32"].argmax(1)))
        scores["int8"]["top1_agreement_with_fp32"] = agree
    return scores
