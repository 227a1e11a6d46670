"""Prometheus metrics and JSON logs: the gateway's and a real worker's /metrics scraped under a
mixed load (OK and INVALID_ARGUMENT, genserve's API and the Open Inference Protocol), the counts
adding up to what was sent; one request id from the client's metadata into the worker's log."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from genserve.oip import grpc_predict_v2_pb2 as v2
from genserve.oip import grpc_predict_v2_pb2_grpc as v2_grpc
from genserve.settings import GatewaySettings, Settings
from genserve.v1 import inference_pb2
from tests.conftest import WorkerProcess
from tests.support import GatewayThread

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset], float]


def scrape(port: int) -> Samples:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture(scope="module")
def stack(repo, redis_url) -> Iterator[tuple[GatewayThread, WorkerProcess, int]]:
    """A worker with JSON logs and /metrics on a free port, and a gateway with /metrics too."""
    prefix = f"test-metrics-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(repo, redis_url, prefix, "--log-level", "INFO", "--log-format", "json",
                           env={"GENSERVE_WORKER__METRICS_PORT": "0"})
    settings = Settings(model_repository=repo, broker_url=redis_url, queue_prefix=prefix,
                        gateway=GatewaySettings(port=0, metrics_port=0))
    try:
        with GatewayThread(settings) as gateway:
            gateway.wait_for_model("vae")
            found = re.search(r"worker metrics on http://127\.0\.0\.1:(\d+)/metrics", worker.output())
            assert found, worker.output()[-2000:]
            yield gateway, worker, int(found.group(1))
    finally:
        worker.stop()


def model_infer(z: np.ndarray) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="vae")
    request.inputs.add(name="z", datatype="FP32", shape=z.shape)
    request.raw_input_contents.append(z.tobytes())
    return request


def test_counts_add_up_per_status_on_gateway_and_worker(stack):
    """48 concurrent RPCs, 36 OK and 12 INVALID_ARGUMENT: both endpoints count exactly them."""
    gateway, worker, worker_port = stack
    v2_stub = v2_grpc.GRPCInferenceServiceStub(gateway.channel)
    calls = [(gateway.inference.GenerateImages, inference_pb2.GenerateImagesRequest(model="vae", count=1 + i % 3, seed=i))
             for i in range(24)]
    calls += [(gateway.inference.GenerateImages, inference_pb2.GenerateImagesRequest(model="vae", count=0))] * 8
    z = np.random.default_rng(0).standard_normal((2, 4), dtype=np.float32)
    calls += [(v2_stub.ModelInfer, model_infer(z))] * 12
    calls += [(v2_stub.ModelInfer, model_infer(np.zeros((2, 5), dtype=np.float32)))] * 4
    gateway_before, worker_before = scrape(gateway.gateway.metrics_port), scrape(worker_port)

    def call(item: tuple) -> str:
        method, request = item
        try:
            method(request, timeout=30)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name

    with ThreadPoolExecutor(len(calls)) as pool:
        codes = list(pool.map(call, calls))
    assert codes.count("OK") == 36 and codes.count("INVALID_ARGUMENT") == 12
    time.sleep(0.2)  # the worker's counters are updated just after it stores the last result
    g, w = scrape(gateway.gateway.metrics_port), scrape(worker_port)

    requests = "genserve_gateway_requests_total"
    assert delta(g, gateway_before, requests, rpc="GenerateImages", model="vae", code="OK") == 24
    assert delta(g, gateway_before, requests, rpc="GenerateImages", model="vae", code="INVALID_ARGUMENT") == 8
    assert delta(g, gateway_before, requests, service="GRPCInferenceService", rpc="ModelInfer", code="OK") == 12
    assert delta(g, gateway_before, requests, rpc="ModelInfer", code="INVALID_ARGUMENT") == 4
    assert delta(g, gateway_before, "genserve_gateway_request_duration_seconds_count", model="vae") == 48

    for op, ok, samples in (("generate_images", 24, sum(1 + i % 3 for i in range(24))), ("infer_tensors", 12, 24)):
        sent = delta(g, gateway_before, "genserve_gateway_requests_per_message_count", model="vae", op=op)
        assert delta(w, worker_before, "genserve_worker_messages_total", model="vae", op=op) == sent
        assert delta(w, worker_before, "genserve_worker_requests_per_message_sum", model="vae", op=op) == ok
        assert delta(w, worker_before, "genserve_worker_requests_total", model="vae", op=op, code="OK") == ok
        assert delta(w, worker_before, "genserve_worker_samples_per_onnx_call_sum", model="vae", op=op) == samples
        assert delta(g, gateway_before, "genserve_gateway_queue_wait_seconds_count", model="vae", op=op) == ok
        assert delta(w, worker_before, "genserve_worker_inference_seconds_count", model="vae", op=op) == sent
    assert delta(g, gateway_before, "genserve_gateway_requests_per_message_count", model="vae") < 36, "nothing batched"
    assert value(g, "genserve_gateway_pending_requests", model="vae") == 0
    assert value(g, "genserve_gateway_inflight_messages", model="vae") == 0
    assert ("genserve_gateway_queue_depth", frozenset({("queue", gateway.settings.queue_for("vae"))})) in g
    assert value(w, "genserve_worker_model_load_seconds_count", model="vae") == 1


def test_request_id_travels_from_the_client_into_the_worker_log(stack):
    """The client's x-request-id comes back in the trailers and is on the worker's JSON log line."""
    gateway, worker, _ = stack
    rid = f"trace-{uuid.uuid4().hex[:8]}"
    _, call = gateway.inference.GenerateImages.with_call(
        inference_pb2.GenerateImagesRequest(model="vae", count=2, seed=1), metadata=(("x-request-id", rid),), timeout=30)
    assert ("x-request-id", rid) in tuple(call.trailing_metadata())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{") and rid in line]
        if lines:
            break
        time.sleep(0.1)
    (line,) = lines
    assert rid in line["request_id"].split(",") and line["logger"] == "genserve.workers.metrics"
    assert line["op"] == "generate_images" and line["level"] == "INFO"


def test_embedded_gateway_serves_the_worker_metrics_too(embedded):
    """In the embedded mode the worker's code runs in the gateway: one registry shows both sides."""
    from prometheus_client import generate_latest

    embedded.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=2, seed=3), timeout=30)
    families = {f.name for f in text_string_to_metric_families(generate_latest(embedded.gateway.dispatcher.metrics.registry).decode())}
    assert {"genserve_gateway_requests", "genserve_worker_messages", "genserve_gateway_pending_requests"} <= families
