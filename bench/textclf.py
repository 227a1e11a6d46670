"""`python -m bench.textclf`: the text classifier's int8 graph against PyTorch fp32 eager.

Reads the latest version of a text classifier (`genserve export textclf` builds `textclf`)
and re-draws its held-out texts the way the build did. Each system then classifies all of
them, with the same batches and the same number of threads:

    PyTorch fp32 eager   the published weights.pt in the model's own nn.Module
    ONNX Runtime fp32    the exported graph
    ONNX Runtime int8    its dynamically quantised twin

in three regimes: one text per call; calls of 32 texts in data order, padded to the longest
(what a naive server does); and the worker's way, chunks of 32 run as calls of similar length
(genserve.workers.loops.text_classification.length_groups). It prints texts/s, the speed-up over PyTorch and the
accuracy and macro-F1 each system reaches on those texts, then the issue's targets: int8 at
least 3x PyTorch fp32 eager throughput, with at most 1 point of accuracy lost.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from genserve.repository import ModelRepository

Run = Callable[[list[np.ndarray]], np.ndarray]  # token rows -> logits (B, labels)
TARGET_SPEEDUP = 3.0
TARGET_LOSS_POINTS = 1.0


def systems(repository: ModelRepository, ref: str, threads: int) -> tuple[dict[str, Run], int]:
    """name -> run(rows), and the tokenizer's pad id."""
    import torch

    from genserve.export.core.publishing import load_published
    from genserve.export.families.textclf.export import session
    from genserve.export.families.textclf.train import to_tensors
    from genserve.tokenization import pad_batch

    torch.set_num_threads(threads)
    manifest = repository.resolve(ref)
    module = load_published(repository, manifest)
    pad_id = int(manifest.preprocess.get("pad_id", 0))
    precision = {"model": manifest.training["serving_graph"].split(":")[0]}
    graphs = {precision.get(role, role): session(repository.file_path(manifest, role), threads) for role in manifest.files}

    def eager(rows: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(*to_tensors(rows)).numpy()

    def onnx(graph) -> Run:
        return lambda rows: graph.run(pad_batch(rows, pad_id))["logits"]

    return {"PyTorch fp32 eager": eager, "ONNX Runtime fp32": onnx(graphs["fp32"]),
            "ONNX Runtime int8": onnx(graphs["int8"])}, pad_id


def regimes(n: int) -> dict[str, list[list[int]]]:
    """Regime -> list of calls, each a list of row indices; the same calls for every system."""
    chunks = [list(range(s, min(s + 32, n))) for s in range(0, n, 32)]
    return {"1 text per call": [[i] for i in range(n)], "32 per call, data order": chunks,
            "32 per chunk, length-grouped": chunks}


def measure(run: Run, rows: list[np.ndarray], calls: list[list[int]], grouped: bool, labels: int) -> tuple[float, np.ndarray]:
    """(texts/s, logits in row order) over one pass through `calls`, after one warm-up call."""
    from genserve.workers.loops.text_classification import length_groups

    if grouped:
        calls = [[chunk[i] for i in group] for chunk in calls for group in length_groups([len(rows[j]) for j in chunk])]
    run([rows[i] for i in calls[0]])
    logits = np.zeros((len(rows), labels), dtype=np.float32)
    started = time.perf_counter()
    for call in calls:
        logits[call] = run([rows[i] for i in call])
    return len(rows) / (time.perf_counter() - started), logits


def heldout(repository: ModelRepository, ref: str, data: Path | None) -> tuple[list[str], np.ndarray]:
    """The held-out texts and labels of the build (same data, seed and split)."""
    from genserve.export.data.labelled_texts import load_texts
    from genserve.export.families.textclf.build import split

    manifest = repository.resolve(ref)
    _, _, (texts, labels) = split(load_texts(data), int(manifest.training.get("seed", 0)), None)
    return texts, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.textclf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path(os.environ.get("GENSERVE_MODEL_REPOSITORY", "model_repository")))
    parser.add_argument("--model", default="textclf", help="name or name:version")
    parser.add_argument("--data", type=Path, help="the CSV/JSONL the model was built from, if not the docstrings")
    parser.add_argument("--threads", type=int, default=1, help="threads for every system (default 1)")
    parser.add_argument("--limit", type=int, help="only the first N held-out texts")
    args = parser.parse_args(argv)

    from genserve.export.families.textclf.export import classification_metrics
    from genserve.tokenization import TextEncoder

    repository = ModelRepository(args.repository)
    manifest = repository.resolve(args.model)
    texts, labels = heldout(repository, args.model, args.data)
    texts, labels = texts[: args.limit], labels[: args.limit]
    run, pad_id = systems(repository, args.model, args.threads)
    encoder = TextEncoder.from_file(repository.root / manifest.name / manifest.version / manifest.preprocess["tokenizer"],
                                    int(manifest.preprocess["max_length"]), pad_id)
    rows = encoder.encode(texts)
    k = len(manifest.labels)
    print(f"{manifest.ref}: {len(rows)} held-out texts, {np.mean([len(r) for r in rows]):.0f} tokens on average "
          f"(max {manifest.preprocess['max_length']}), {args.threads} thread(s) per system, serving graph "
          f"{manifest.training['serving_graph']}")
    print(f"{'regime':<30} {'system':<20} {'texts/s':>9} {'x PyTorch':>10} {'accuracy':>9} {'macro-F1':>9}")
    summary = {}
    for regime, calls in regimes(len(rows)).items():
        base = None
        for name, fn in run.items():
            speed, logits = measure(fn, rows, calls, "grouped" in regime, k)
            scores = classification_metrics(labels, logits, k)
            base = base or speed
            summary[(regime, name)] = (speed / base, scores["accuracy"])
            print(f"{regime:<30} {name:<20} {speed:>9.1f} {speed / base:>9.2f}x "
                  f"{100 * scores['accuracy']:>8.2f}% {100 * scores['macro_f1']:>8.2f}%")
    return report_targets(summary)


def report_targets(summary: dict[tuple[str, str], tuple[float, float]]) -> int:
    """Print the issue's targets per regime; exit 0 when the worker's regime meets both."""
    ok = True
    for regime in dict.fromkeys(r for r, _ in summary):
        speedup, int8_acc = summary[(regime, "ONNX Runtime int8")]
        loss = 100 * (summary[(regime, "PyTorch fp32 eager")][1] - int8_acc)
        met = speedup >= TARGET_SPEEDUP and loss <= TARGET_LOSS_POINTS
        ok &= met or "grouped" not in regime
        print(f"target [{regime}]: int8 {speedup:.2f}x PyTorch fp32 (>= {TARGET_SPEEDUP:g}x), "
              f"accuracy lost {loss:+.2f} points (<= {TARGET_LOSS_POINTS:g}): {'met' if met else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
