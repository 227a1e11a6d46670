"""Cancellation frees work: a cancelled GenerateText stream stops its generation in the decode
scheduler (the sequence leaves the batch well before max_new_tokens). The embedded mode runs the
worker's scheduler in-process, so its decode steps can be counted, and its graph is slowed to
10 ms a step so that the cancel lands mid-generation."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from genserve.settings import GatewaySettings, Settings
from genserve.v1 import inference_pb2
from tests.support import GatewayThread
from tests.text.conftest import GPT_NAME

pytestmark = pytest.mark.timeout(120)

MAX_NEW = 80


def test_a_cancelled_stream_stops_its_generation_in_the_scheduler(gpt_repo: Path):
    with GatewayThread(Settings(model_repository=gpt_repo, gateway=GatewaySettings(port=0))) as gw:
        loaded = gw.gateway.dispatcher.backend._cache.get(f"{GPT_NAME}:1")  # the key the dispatcher sends
        run = loaded.onnx.run

        def slow_run(feeds):
            time.sleep(0.01)
            return run(feeds)

        loaded.onnx.run = slow_run
        request = inference_pb2.GenerateTextRequest(model=GPT_NAME, prompt="The ", max_new_tokens=MAX_NEW, seed=3)
        call = gw.inference.GenerateText(request, timeout=60)
        tokens = 0
        for chunk in call:
            tokens += len(chunk.tokens)
            if tokens >= 3:
                break
        call.cancel()
        scheduler = loaded.state["decode_scheduler"]
        deadline = time.monotonic() + 10
        while scheduler.batch.rows:
            assert time.monotonic() < deadline, "the cancelled sequence kept decoding"
            time.sleep(0.05)
        steps = len(scheduler.steps)
        time.sleep(0.5)
        assert len(scheduler.steps) == steps  # nothing decodes any more
        assert steps < MAX_NEW // 2, f"{steps} decode steps for a stream cancelled after 3 tokens"
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() == grpc.StatusCode.CANCELLED
        # the scheduler serves the next request in full
        done = gw.inference.CompleteText(inference_pb2.GenerateTextRequest(
            model=GPT_NAME, prompt="The ", max_new_tokens=5, seed=3), timeout=60)
        assert len(done.tokens) == 5
