"""Text classification from genserve.client and the `genserve classify` command, against a real gateway + worker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genserve.client import Client
from tests.textclf.conftest import MODEL

pytestmark = pytest.mark.integration

TEXTS = ["simmer the garlic in the sauce", "the striker scored a late goal"]


def test_client_classifies_texts_best_label_first(textclf_gateway) -> None:
    with Client(textclf_gateway.address) as client:
        predictions = client.classify_texts(MODEL, TEXTS, top_k=2)
    assert [p[0][0] for p in predictions] == ["cooking", "sports"]
    assert all(len(p) == 2 and p[0][1] >= p[1][1] for p in predictions)


def test_classify_command_prints_a_label_per_text(textclf_gateway) -> None:
    done = subprocess.run([sys.executable, "-m", "genserve", "classify", MODEL, *TEXTS,
                           "--address", textclf_gateway.address], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["cooking", "sports"]
    assert [line.split("\t")[1] for line in lines] == TEXTS
