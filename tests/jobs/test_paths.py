"""Job input paths cannot leave the jobs volume: '..', absolute paths and symlinks leading out
are INVALID_ARGUMENT before anything is read (services/jobs/planner.py resolve_input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genserve.errors import InvalidArgumentError
from genserve.services.jobs.planner import resolve_input
from genserve.v1 import jobs_pb2


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    root = tmp_path / "jobs"
    (root / "inputs").mkdir(parents=True)
    (root / "inputs" / "ok.jsonl").write_text('{"id": "1", "text": "hi"}\n')
    (tmp_path / "secret.jsonl").write_text('{"id": "s", "text": "outside"}\n')
    (root / "inputs" / "out.jsonl").symlink_to(tmp_path / "secret.jsonl")
    (root / "inputs" / "outdir").symlink_to(tmp_path)
    (root / "inputs" / "in.jsonl").symlink_to(root / "inputs" / "ok.jsonl")
    return root


def test_a_relative_path_on_the_volume_and_a_symlink_inside_it_resolve(volume: Path):
    assert resolve_input(volume, jobs_pb2.InputFileJob(input_path="inputs/ok.jsonl")) == (volume / "inputs" / "ok.jsonl").resolve()
    assert resolve_input(volume, jobs_pb2.InputFileJob(input_path="inputs/in.jsonl")).name == "ok.jsonl"


@pytest.mark.parametrize("path", ["../secret.jsonl", "inputs/../../secret.jsonl", "inputs/out.jsonl",
                                  "inputs/outdir/secret.jsonl", "/etc/hostname"])
def test_paths_leaving_the_jobs_volume_are_invalid_argument(volume: Path, path: str):
    """'..', a symlink to a file or a folder outside, an absolute path: refused, naming the rule."""
    with pytest.raises(InvalidArgumentError, match="jobs volume"):
        resolve_input(volume, jobs_pb2.InputFileJob(input_path=path))


def test_an_absolute_path_inside_the_volume_is_refused_too(volume: Path):
    """Clients name files relative to the volume; an absolute path is refused even when inside."""
    with pytest.raises(InvalidArgumentError, match="relative to the jobs volume"):
        resolve_input(volume, jobs_pb2.InputFileJob(input_path=str(volume / "inputs" / "ok.jsonl")))
