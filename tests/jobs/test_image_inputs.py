"""Input-file jobs over image models (embedded mode): .npy to a classifier, PNGs to a denoiser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genserve.settings import GatewaySettings, JobSettings, Settings
from genserve.tensors import from_proto, png_encode, to_proto
from genserve.v1 import inference_pb2, jobs_pb2
from tests.jobs.conftest import JobsGateway

pytestmark = pytest.mark.integration


def _digits(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32)


def test_image_jobs_classify_npy_and_denoise_pngs_with_bad_items_in_errors(image_repo: Path, tmp_path: Path):
    """A NaN image and a broken PNG fail alone; every other item's output equals the online RPC's."""
    images = _digits(30)
    images[7] = np.nan
    (tmp_path / "in" / "pngs").mkdir(parents=True)
    np.save(tmp_path / "in" / "digits.npy", images)
    for i in range(12):
        (tmp_path / "in" / "pngs" / f"scan-{i:02d}.png").write_bytes(b"broken" if i == 5 else png_encode(images[(i + 8) % 30]))
    settings = Settings(model_repository=image_repo, gateway=GatewaySettings(port=0), jobs=JobSettings(root=tmp_path))
    with JobsGateway(settings) as gw:
        spec = jobs_pb2.InputFileJob(model="digits", input_path="in/digits.npy", chunk_size=8, top_k=3)
        classified = gw.wait(gw.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(input_file=spec), timeout=30).id)
        spec = jobs_pb2.InputFileJob(model="dae", input_path="in/pngs", chunk_size=5)
        denoised = gw.wait(gw.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(input_file=spec), timeout=30).id)
        online = gw.inference.Classify(inference_pb2.ClassifyRequest(model="digits", images=to_proto(images[9:10]), top_k=3), timeout=30)
        png = (tmp_path / "in" / "pngs" / "scan-03.png").read_bytes()
        cleaned = from_proto(gw.inference.Denoise(inference_pb2.DenoiseRequest(model="dae", png=[png]), timeout=30).images)
    assert classified.state == jobs_pb2.JOB_STATE_SUCCEEDED_WITH_ERRORS and (classified.done, classified.failed) == (30, 1)
    folder = Path(classified.result_dir)
    assert [json.loads(x)["line"] for x in (folder / "errors.jsonl").read_text().splitlines()] == [7]
    outputs = [json.loads(x) for p in sorted((folder / "shards").glob("out-*.jsonl")) for x in p.read_text().splitlines()]
    assert [o["id"] for o in outputs] == [str(i) for i in range(30) if i != 7]
    nine = next(o for o in outputs if o["id"] == "9")
    assert [t["index"] for t in nine["top"]] == [t.index for t in online.predictions[0].top]
    assert denoised.state == jobs_pb2.JOB_STATE_SUCCEEDED_WITH_ERRORS and denoised.failed == 1
    errors = [json.loads(x) for x in (Path(denoised.result_dir) / "errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["scan-05.png"]
    shard = np.load(Path(denoised.result_dir) / "shards" / "denoised-000000.npz")
    assert shard["ids"].tolist() == [f"scan-{i:02d}.png" for i in range(5)]
    assert np.allclose(shard["images"][3], cleaned[0], atol=1e-6)
