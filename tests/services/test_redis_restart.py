"""Redis restarted (append-only file) under a gateway and a worker: UNAVAILABLE and NOT_SERVING
meanwhile, then both recover by themselves and consumption really resumes. A private
redis-server on a free port: the shared one is never restarted."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genserve.v1 import inference_pb2
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis(port: int, data: Path) -> subprocess.Popen:
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
                                "--dir", str(data), "--save", ""], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return process
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.05)


def _health(gw: GatewayThread) -> int:
    return health_pb2_grpc.HealthStub(gw.channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_redis_restart_is_unavailable_meanwhile_and_recovers_by_itself(repo: Path, tmp_path: Path):
    """Down: GenerateImages UNAVAILABLE fast, health NOT_SERVING. Up again: health SERVING and
    new requests answered by the same worker process, without restarting anything."""
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode:
        pytest.skip("no redis-server binary")
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis(port, tmp_path)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(repo, url, prefix)
    request = inference_pb2.GenerateImagesRequest(model="vae", count=4, seed=8)
    try:
        with GatewayThread(distributed_settings(repo, url, prefix)) as gw:
            gw.wait_for_model("vae")
            before = gw.inference.GenerateImages(request, timeout=30).images.data
            server.terminate()
            server.wait(timeout=10)
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                gw.inference.GenerateImages(request, timeout=20)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 10
            deadline = time.monotonic() + 15
            while _health(gw) != health_pb2.HealthCheckResponse.NOT_SERVING:
                assert time.monotonic() < deadline, "health stayed SERVING with Redis down"
                time.sleep(0.2)
            server = _redis(port, tmp_path)
            deadline = time.monotonic() + 30
            while _health(gw) != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "health did not come back"
                time.sleep(0.2)
            answered = None
            deadline = time.monotonic() + 60
            while answered is None:  # the worker's consumer reconnects on its own
                try:
                    answered = gw.inference.GenerateImages(request, timeout=10).images.data
                except grpc.RpcError as exc:
                    assert time.monotonic() < deadline, f"consumption did not resume: {exc.code().name}"
            assert answered == before
            assert worker.process.poll() is None  # the same worker process, never restarted
    finally:
        worker.stop()
        server.terminate()
        server.wait(timeout=10)
