"""Input-file jobs over a text generator: one prompt per JSONL line, checked like CompleteText."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from genserve import seeds
from genserve.v1 import inference_pb2, jobs_pb2
from tests.conftest import WorkerProcess
from tests.jobs.conftest import JobsGateway, jobs_settings
from tests.text.conftest import GPT_NAME, _wait_for_worker

pytestmark = pytest.mark.integration

PROMPTS = ["The module", "def ", "import os", "A list", "Return the", "class Foo", "", "for x in", "The", "If"]
BAD = {2: json.dumps({"id": "bad-temperature", "prompt": "x", "temperature": -1}),
       5: json.dumps({"id": "too-long", "prompt": "the module " * 200}),
       8: "{not json"}


def _lines() -> list[str]:
    lines = []
    for i, prompt in enumerate(PROMPTS):
        row = {"id": f"p{i}", "prompt": prompt, "max_new_tokens": 6 + i, "temperature": 0.8, "top_k": 20}
        if i % 3 == 0:
            row["seed"] = 1000 + i  # the others get seeds.line_seed(job seed, line)
        lines.append(json.dumps(row))
    for line, raw in BAD.items():
        lines.insert(line, raw)
    return lines


def test_prompt_file_job_completes_each_line_like_complete_text(gpt_repo: Path, redis_url: str, tmp_path: Path):
    """13 lines (3 malformed), chunks of 4, one worker: SUCCEEDED_WITH_ERRORS, exactly the bad
    lines in errors.jsonl with their reason, every output equal to CompleteText with its seed."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    lines = _lines()
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    worker = WorkerProcess(gpt_repo, redis_url, prefix)
    try:
        with JobsGateway(jobs_settings(gpt_repo, redis_url, prefix, tmp_path)) as gw:
            _wait_for_worker(gw, inference_pb2.GenerateTextRequest(model=GPT_NAME, max_new_tokens=1, seed=0))
            spec = jobs_pb2.InputFileJob(model=GPT_NAME, input_path="prompts.jsonl", chunk_size=4, seed=7)
            job = gw.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(input_file=spec), timeout=60)
            assert job.request.input_file.seed == 7
            final = gw.wait(job.id, timeout_s=120)
            assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED_WITH_ERRORS, final.error
            assert (final.done, final.failed, final.total) == (13, 3, 13)
            folder = Path(final.result_dir)
            errors = [json.loads(x) for x in (folder / "errors.jsonl").read_text().splitlines()]
            assert [e["line"] for e in errors] == sorted(BAD)
            assert "temperature must be" in errors[0]["error"] and errors[0]["id"] == "bad-temperature"
            assert "context" in errors[1]["error"] and "not valid JSON" in errors[2]["error"]
            outputs = [json.loads(x) for p in sorted((folder / "shards").glob("out-*.jsonl")) for x in p.read_text().splitlines()]
            assert [o["id"] for o in outputs] == [f"p{i}" for i in range(len(PROMPTS))]
            for o in outputs:
                i = int(o["id"][1:])
                assert o["seed"] == (1000 + i if i % 3 == 0 else seeds.line_seed(7, o["line"]))
                online = gw.inference.CompleteText(inference_pb2.GenerateTextRequest(
                    model=GPT_NAME, prompt=PROMPTS[i], max_new_tokens=6 + i, temperature=0.8, top_k=20,
                    seed=o["seed"]), timeout=60)
                assert (o["text"], o["tokens"]) == (online.text, len(online.tokens))
                assert o["finish_reason"] == inference_pb2.FinishReason.Name(online.finish_reason).removeprefix("FINISH_REASON_").lower()
    finally:
        worker.stop()


def test_prompt_file_job_runs_in_the_embedded_mode(gpt_repo: Path, tmp_path: Path):
    """Without a broker the same job runs on the gateway's threads: same outputs for the same job seed."""
    from genserve.settings import GatewaySettings, JobSettings, Settings

    (tmp_path / "p.jsonl").write_text("\n".join(_lines()) + "\n")
    settings = Settings(model_repository=gpt_repo, gateway=GatewaySettings(port=0), jobs=JobSettings(root=tmp_path))
    with JobsGateway(settings) as gw:
        spec = jobs_pb2.InputFileJob(model=GPT_NAME, input_path="p.jsonl", chunk_size=5, seed=7)
        runs = [gw.wait(gw.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(input_file=spec), timeout=60).id, timeout_s=120)
                for _ in range(2)]
    texts = []
    for final in runs:
        assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED_WITH_ERRORS and (final.done, final.failed) == (13, 3)
        shards = sorted((Path(final.result_dir) / "shards").glob("out-*.jsonl"))
        texts.append([(o["id"], o["text"], o["seed"]) for p in shards for o in map(json.loads, p.read_text().splitlines())])
    assert texts[0] == texts[1] and len(texts[0]) == len(PROMPTS)
