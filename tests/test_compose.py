"""docker-compose.yml runs what it claims: its gateway and worker commands, run here as local
processes with the file's own environment, serve a request through Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
import yaml

from genserve.v1 import inference_pb2, inference_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

pytestmark = pytest.mark.integration


def service_process(name: str, redis_url: str, repo: Path, prefix: str, log: Path) -> subprocess.Popen:
    """The compose service's command with its environment, pointed at this machine's Redis."""
    service = COMPOSE["services"][name]
    env = dict(os.environ, **{k: str(v) for k, v in service["environment"].items()})
    assert env["GENSERVE_BROKER_URL"].startswith("redis://redis:6379")
    env.update(GENSERVE_BROKER_URL=redis_url, GENSERVE_MODEL_REPOSITORY=str(repo), GENSERVE_QUEUE_PREFIX=prefix,
               GENSERVE_LOG_LEVEL="WARNING")
    command = list(service["command"])
    assert command[0] == "genserve"
    if name == "gateway":  # the compose file binds 0.0.0.0:50051; here loopback and a free port
        command[command.index("--host") + 1] = "127.0.0.1"
        command[command.index("--port") + 1] = "0"
    argv = [sys.executable, "-m", "genserve", *command[1:]]
    return subprocess.Popen(argv, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)


def test_compose_file_declares_redis_gateway_and_workers():
    """The stack is Redis with an append-only file, a gateway on 50051 and replicated workers."""
    services = COMPOSE["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["gateway"]["ports"] == ["50051:50051"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["command"] == ["genserve", "worker"]


def test_compose_gateway_and_worker_commands_serve_a_request(repo: Path, redis_url: str, tmp_path: Path):
    """Run the two service commands as local processes and generate through them."""
    prefix = f"compose-{uuid.uuid4().hex[:6]}"
    worker = service_process("worker", redis_url, repo, prefix, tmp_path / "worker.log")
    gateway = service_process("gateway", redis_url, repo, prefix, tmp_path / "gateway.log")
    try:
        port = None
        for _ in range(600):
            text = (tmp_path / "gateway.log").read_text()
            if "ready on" in text:
                port = text.split("ready on 127.0.0.1:")[1].split()[0]
                break
            assert gateway.poll() is None, text
            subprocess.run(["sleep", "0.1"])
        assert port, "the gateway never became ready"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            response = stub.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=2, seed=4), timeout=60)
        assert list(response.images.shape) == [2, 1, 28, 28]
    finally:
        for process in (gateway, worker):
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed (make compose-check)")
def test_compose_file_is_valid_for_docker_compose():
    """`docker-compose config` accepts the file."""
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
