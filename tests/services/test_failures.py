"""Failure paths with real parts: broker down, queue full, corrupt model, pickle refused,
worker restarts, and a generic reflection client that has no generated stubs."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from genserve.settings import GatewaySettings, Settings
from genserve.tensors import from_proto
from genserve.v1 import inference_pb2
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

pytestmark = pytest.mark.integration


def test_generic_reflection_client_calls_the_service_without_stubs(gateway):
    """A client that learns the API from server reflection lists models and generates images."""
    channel = grpc.insecure_channel(gateway.address)
    database = ProtoReflectionDescriptorDatabase(channel)
    assert "genserve.v1.InferenceService" in database.get_services()
    pool = descriptor_pool.DescriptorPool(database)

    def call(service: str, method: str, body: dict) -> dict:
        descriptor = pool.FindServiceByName(service).FindMethodByName(method)
        request_cls = message_factory.GetMessageClass(descriptor.input_type)
        response_cls = message_factory.GetMessageClass(descriptor.output_type)
        stub = channel.unary_unary(f"/{service}/{method}", request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response_cls.FromString)
        return json_format.MessageToDict(stub(json_format.ParseDict(body, request_cls()), timeout=30))

    models = call("genserve.v1.ModelService", "ListModels", {})
    assert {m["name"] for m in models["models"]} == {"vae", "cvae"}
    images = call("genserve.v1.InferenceService", "GenerateImages", {"model": "vae", "count": 2, "seed": "5"})
    assert images["images"]["shape"] == ["2", "1", "28", "28"] and images["seed"] == "5"
    channel.close()


def test_broker_down_is_unavailable(repo: Path):
    """With nothing listening at the broker address: UNAVAILABLE at once, health NOT_SERVING."""
    settings = Settings(model_repository=repo, broker_url="redis://127.0.0.1:1/0", gateway=GatewaySettings(port=0))
    with GatewayThread(settings) as gw:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            gw.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=1), timeout=20)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unreachable" in info.value.details()
        assert time.monotonic() - started < 10
        health = health_pb2_grpc.HealthStub(gw.channel)
        deadline = time.monotonic() + 10
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health stayed SERVING with the broker down"
            time.sleep(0.2)


def test_full_queue_is_resource_exhausted(repo: Path, redis_url: str):
    """Past the pending-request limit the gateway refuses with RESOURCE_EXHAUSTED, naming it."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"  # no worker consumes this prefix
    settings = distributed_settings(repo, redis_url, prefix)
    settings.gateway.max_pending_requests = 2
    settings.batching.max_inflight_batches = 4
    with GatewayThread(settings) as gw:
        request = inference_pb2.GenerateImagesRequest(model="vae", count=1)
        waiting = [gw.inference.GenerateImages.future(request, timeout=3) for _ in range(2)]
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as info:
            gw.inference.GenerateImages(request, timeout=3)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit 2" in info.value.details()
        for future in waiting:
            assert future.exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED
    redis.Redis.from_url(redis_url).delete(f"{prefix}.vae")


def test_corrupt_model_file_is_refused_as_unavailable(repo: Path, tmp_path: Path):
    """A model file whose sha256 differs from the manifest is never loaded."""
    shutil.copytree(repo / "vae", tmp_path / "vae")
    with open(tmp_path / "vae" / "1" / "model.onnx", "ab") as f:
        f.write(b"tampered")
    with GatewayThread(Settings(model_repository=tmp_path, gateway=GatewaySettings(port=0))) as gw:
        with pytest.raises(grpc.RpcError) as info:
            gw.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=1), timeout=20)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "sha256" in info.value.details()


def test_pickled_task_message_is_refused_by_the_worker(gateway, worker, redis_url: str, queue_prefix: str):
    """A message serialized with pickle is rejected by the worker and never executed."""
    from celery import Celery

    sender = Celery(broker=redis_url, set_as_current=False)
    sender.conf.update(task_serializer="pickle", accept_content=["pickle"])
    payload = {"model": "vae:1", "op": "generate_images", "requests": [{"count": 1, "seed": 1}]}
    task_id = uuid.uuid4().hex
    sender.send_task("genserve.run_batch", args=[payload], queue=f"{queue_prefix}.vae", task_id=task_id)
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 15
    while "ContentDisallowed" not in worker.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "ContentDisallowed" in worker.output() or "pickle" in worker.output()
    assert client.get(f"celery-task-meta-{task_id}") is None
    assert gateway.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=1), timeout=30)


def test_request_waits_for_a_worker_that_starts_later(repo: Path, redis_url: str):
    """Accepted work stays queued in Redis while no worker runs, and is served when one starts."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    with GatewayThread(distributed_settings(repo, redis_url, prefix)) as gw:
        request = inference_pb2.GenerateImagesRequest(model="vae", count=3, seed=9)
        pending = gw.inference.GenerateImages.future(request, timeout=60)
        time.sleep(1.0)
        assert not pending.done()
        late = WorkerProcess(repo, redis_url, prefix)
        try:
            images = from_proto(pending.result().images)
        finally:
            late.stop()
    assert images.shape == (3, 1, 28, 28) and np.isfinite(images).all()


def test_embedded_mode_serves_the_same_bytes_as_the_distributed_one(embedded, gateway):
    """No broker: the gateway runs the worker's code in-process, with identical results."""
    request = inference_pb2.GenerateImagesRequest(model="vae", count=5, seed=77)
    local = embedded.inference.GenerateImages(request, timeout=30)
    remote = gateway.inference.GenerateImages(request, timeout=30)
    assert local.images.data == remote.images.data and local.seed == 77


def test_reflection_answers_on_v1_and_v1alpha(gateway):
    """Clients that ask grpc.reflection.v1 first (grpcurl, Postman) get the same answer as v1alpha."""
    from grpc_reflection.v1alpha import reflection_pb2

    channel = grpc.insecure_channel(gateway.address)
    for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
        call = channel.stream_stream(f"/{package}.ServerReflection/ServerReflectionInfo",
                                     request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        (answer,) = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        names = {s.name for s in answer.list_services_response.service}
        assert {"genserve.v1.InferenceService", "genserve.v1.ModelService", "grpc.health.v1.Health"} <= names
    channel.close()


def test_corrupt_graph_with_a_matching_sha256_is_unavailable_and_not_ready(repo: Path, redis_url: str, tmp_path: Path):
    """Garbage in model.onnx with a manifest sha256 to match: ListModels says ready=false with
    the reason; a real worker answers the request UNAVAILABLE (not INTERNAL) and keeps serving."""
    import json

    from genserve.repository import MANIFEST, sha256_file
    from genserve.v1 import models_pb2

    shutil.copytree(repo / "vae", tmp_path / "vae")
    shutil.copytree(repo / "vae", tmp_path / "cvae")  # a healthy model beside it
    folder = tmp_path / "vae" / "1"
    (folder / "model.onnx").write_bytes(b"\x08\x07" + b"garbage" * 100)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["model"]["sha256"] = sha256_file(folder / "model.onnx")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    cvae_manifest = json.loads((tmp_path / "cvae" / "1" / MANIFEST).read_text())
    (tmp_path / "cvae" / "1" / MANIFEST).write_text(json.dumps(cvae_manifest | {"name": "cvae"}))
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(tmp_path, redis_url, prefix)
    try:
        with GatewayThread(distributed_settings(tmp_path, redis_url, prefix)) as gw:
            listed = {m.name: m for m in gw.models.ListModels(models_pb2.ListModelsRequest(), timeout=10).models}
            assert not listed["vae"].ready and "not a valid ONNX file" in listed["vae"].not_ready_reason
            assert listed["cvae"].ready
            with pytest.raises(grpc.RpcError) as info:
                gw.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=1), timeout=60)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not a valid ONNX file" in info.value.details()
            gw.wait_for_model("cvae")  # the same worker still serves the healthy model
    finally:
        worker.stop()
    assert redis.Redis.from_url(redis_url).llen(f"{prefix}.vae") == 0
