"""The `genserve` command as a user runs it: separate processes, real files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

GENSERVE = [sys.executable, "-m", "genserve"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*GENSERVE, *args], capture_output=True, text=True, timeout=timeout)


def test_serve_then_generate_writes_a_png_grid_of_64_digits(repo: Path, tmp_path: Path):
    """`genserve serve` (embedded) + `genserve generate -n 64` writes an 8x8 grid PNG."""
    server = subprocess.Popen([*GENSERVE, "serve", "--repository", str(repo), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        for line in server.stdout:
            if match := re.search(r"ready on [\d.]+:(\d+)", line):
                port = match.group(1)
                break
        assert port, "serve never said it was ready"
        out = tmp_path / "digits.png"
        result = run("generate", "vae", "-n", "64", "--seed", "1", "-o", str(out), "--address", f"127.0.0.1:{port}")
        assert result.returncode == 0, result.stderr
        assert "wrote 64 images from vae:1 (seed 1)" in result.stdout
        grid = np.asarray(Image.open(out))
        assert grid.shape == (8 * 30 + 2, 8 * 30 + 2) and grid.std() > 5
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0, "serve did not stop cleanly on SIGTERM"


def test_gateway_and_worker_refuse_to_start_without_a_broker(repo: Path):
    """The distributed parts say what they need instead of starting half-configured."""
    for command in ("gateway", "worker"):
        result = run(command, "--repository", str(repo))
        assert result.returncode == 2 and "--broker-url" in result.stderr


def test_models_lists_the_repository(repo: Path):
    """`genserve models` prints each version with its kind, loop and held-out metric."""
    result = run("models", "--repository", str(repo))
    assert result.returncode == 0
    assert re.search(r"^vae:1\s+vae\s+latent_sampler\s+heldout_neg_elbo_nats=", result.stdout, re.M)
    assert "cvae:1" in result.stdout


def test_export_publishes_the_next_version(repo: Path, tmp_path: Path):
    """`genserve export vae` trains, exports and publishes v1 then v2 in a fresh repository."""
    target = tmp_path / "models"
    args = ("export", "vae", "--repository", str(target), "--epochs", "1", "--limit", "300",
            "--checkpoints", str(tmp_path / "ckpt"))
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert (target / "vae" / "1" / "model.onnx").is_file()
    second = run(*args[:-2], "--checkpoints", str(tmp_path / "ckpt2"))
    assert second.returncode == 0, second.stderr
    assert (target / "vae" / "2" / "manifest.json").is_file()
