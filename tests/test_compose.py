"""docker-compose.yml runs what it claims.

`docker-compose config` validates the file (every profile) and resolves it: anchors, merges and
${VARIABLES}. The resolved services then run here as local processes with their own commands
and environments: the redis service's redis-server (password and all) on a free port, the
`models` builder, the gateway and its healthcheck, the CPU workers, Flower; only the host
names and ports are pointed at this machine. A request through the gateway must succeed, and
Flower must see the worker and its task events. Prometheus and the GPU worker cannot run here;
their configuration is checked against the services they scrape and the devices they reserve.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
import yaml

from genserve.v1 import inference_pb2, inference_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = f"compose-{uuid.uuid4().hex[:8]}"
ZOO = ("digits", "vae", "cvae", "dae", "gan", "cgan", "faces", "gpt", "textclf")  # scripts/models.sh

pytestmark = pytest.mark.integration


def compose_command() -> list[str]:
    """docker-compose (v1, Debian's package) or the `docker compose` plugin; scripts/test.sh installs one."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor `docker compose` is installed: scripts/test.sh installs docker-compose "
                "with apt-get; or `apt-get install -y docker-compose`")


def compose_config(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, REDIS_PASSWORD=PASSWORD)
    return subprocess.run([*compose_command(), "-f", str(ROOT / "docker-compose.yml"),
                           "--profile", "gpu", "--profile", "ops", "config", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """Every service of every profile, as docker-compose resolves them."""
    result = compose_config()
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_compose_file_is_valid_for_docker_compose():
    """`docker-compose config --quiet` accepts the file with its gpu and ops profiles."""
    result = compose_config("--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_redis_is_private_persistent_and_password_protected(services: dict[str, Any]):
    """Redis: append-only file, a password every URL carries, a healthcheck, no published port."""
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--requirepass") + 1] == PASSWORD
    assert "ports" not in redis and "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    for name in ("gateway", "worker", "worker-gpu", "flower"):
        assert services[name]["environment"]["GENSERVE_BROKER_URL"] == f"redis://:{PASSWORD}@redis:6379/0"


def test_compose_services_share_models_and_jobs_and_expose_metrics_ports(services: dict[str, Any]):
    """Gateway and workers mount the model and jobs volumes; metrics on 9100 (gateway) and 9101 (workers)."""
    for name in ("gateway", "worker", "worker-gpu"):
        service = services[name]
        targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service["volumes"]}
        assert {"/models", "/jobs"} <= targets and service["environment"]["GENSERVE_JOBS__ROOT"] == "/jobs"
    assert services["gateway"]["environment"]["GENSERVE_GATEWAY__METRICS_PORT"] == "9100"
    assert services["worker"]["environment"]["GENSERVE_WORKER__METRICS_PORT"] == "9101"
    gateway_ports = services["gateway"]["ports"]
    assert any(str(p.get("published", "")) == "50051" if isinstance(p, dict) else p == "50051:50051" for p in gateway_ports)
    assert services["gateway"]["healthcheck"]["test"][1:3] == ["genserve", "health"]


def test_compose_workers_scale_and_gpu_workers_reserve_nvidia_devices(services: dict[str, Any]):
    """CPU workers have no fixed name or port (so --scale works); GPU workers build onnxruntime-gpu and reserve GPUs."""
    worker, gpu = services["worker"], services["worker-gpu"]
    assert "container_name" not in worker and "ports" not in worker and worker["deploy"]["replicas"] >= 2
    assert worker["command"] == ["genserve", "worker"] and gpu["command"] == ["genserve", "worker"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["args"]["RUNTIME"] == "gpu"
    assert gpu["environment"]["GENSERVE_WORKER__EXECUTION_PROVIDER"] == "cuda"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_prometheus_scrapes_the_gateway_workers_and_flower(services: dict[str, Any]):
    """deploy/prometheus.yml scrapes the compose services on the ports their environments configure."""
    assert services["prometheus"]["profiles"] == ["ops"] and services["flower"]["profiles"] == ["ops"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["genserve-gateway"]["static_configs"][0]["targets"] == ["gateway:9100"]
    dns = jobs["genserve-workers"]["dns_sd_configs"][0]
    assert set(dns["names"]) == {"worker", "worker-gpu"} and dns["port"] == 9101
    assert jobs["flower"]["static_configs"][0]["targets"] == ["flower:5555"]


def test_images_keep_torch_out_of_the_gateway_and_workers(services: dict[str, Any]):
    """Gateway and workers run the `runtime` stage, which checks torch is absent; only the builder has torch."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile.split("AS runtime")[1].split("\nFROM ")[0]
    assert "torch" not in runtime.replace("torch must not be in the runtime image", "").replace("'torch'", "")
    for name in ("gateway", "worker", "worker-gpu"):
        assert services[name]["build"]["target"] == "runtime"
    assert services["models"]["build"]["target"] == "train" and "torch==" in dockerfile.split("AS train")[1]


# -- the services as local processes -----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The compose services' commands as local processes against a local redis-server."""

    def __init__(self, services: dict[str, Any], tmp: Path, repo: Path) -> None:
        self.services, self.tmp, self.repo = services, tmp, repo
        self.redis_port = free_port()
        self.processes: list[subprocess.Popen] = []

    def env(self, name: str, **extra: str) -> dict[str, str]:
        service_env = {k: str(v) for k, v in (self.services[name].get("environment") or {}).items()}
        env = {**os.environ, **service_env, "PYTHONUNBUFFERED": "1", **extra}
        if "GENSERVE_BROKER_URL" in env:  # the compose host name -> this machine, the password kept
            assert env["GENSERVE_BROKER_URL"].startswith(f"redis://:{PASSWORD}@redis:6379/")
            env["GENSERVE_BROKER_URL"] = env["GENSERVE_BROKER_URL"].replace("@redis:6379", f"@127.0.0.1:{self.redis_port}")
        if env.get("GENSERVE_MODEL_REPOSITORY") == "/models":
            env["GENSERVE_MODEL_REPOSITORY"] = str(self.repo)
        if env.get("GENSERVE_JOBS__ROOT") == "/jobs":
            env["GENSERVE_JOBS__ROOT"] = str(self.tmp / "jobs")
        # Metrics listeners would collide here (two workers on one host, other test runs): off.
        env.pop("GENSERVE_GATEWAY__METRICS_PORT", None)
        env.pop("GENSERVE_WORKER__METRICS_PORT", None)
        return env

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Path:
        log = self.tmp / f"{name}-{len(self.processes)}.log"
        self.processes.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT))
        return log

    def python(self, command: list[str]) -> list[str]:
        """`genserve ...` / `celery ...` run by this interpreter (the container's PATH holds them)."""
        module = {"genserve": "genserve", "celery": "celery"}[command[0]]
        return [sys.executable, "-m", module, *command[1:]]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def stack(services: dict[str, Any], tmp_path: Path, repo: Path) -> Iterator[Stack]:
    running = Stack(services, tmp_path, repo)
    (tmp_path / "jobs").mkdir()
    redis = services["redis"]
    running.start("redis", [*redis["command"], "--port", str(running.redis_port), "--bind", "127.0.0.1",
                            "--dir", str(tmp_path)], running.env("redis"))
    healthcheck = redis["healthcheck"]["test"][1].replace("redis-cli", f"redis-cli -p {running.redis_port}")
    wait_for(lambda: subprocess.run(["sh", "-c", healthcheck], env=running.env("redis"),
                                    capture_output=True).returncode == 0, 10,
             "the redis healthcheck")
    yield running
    running.stop()


def test_models_builder_keeps_a_zoo_that_is_already_published(services: dict[str, Any], tmp_path: Path):
    """The one-shot `models` command exits 0 without building anything when every zoo model is there."""
    zoo = tmp_path / "zoo"
    for name in ZOO:
        (zoo / name / "1").mkdir(parents=True)
        (zoo / name / "1" / "manifest.json").write_text("{}")
    service = services["models"]
    env = dict(os.environ, **{k: str(v) for k, v in service["environment"].items()})
    env.update(GENSERVE_MODEL_REPOSITORY=str(zoo), CHECKPOINTS=str(tmp_path / "checkpoints"))
    done = subprocess.run(service["command"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("already in") == len(ZOO) and "building" not in done.stdout


def test_compose_services_serve_a_request_and_flower_sees_the_worker(stack: Stack, services: dict[str, Any]):
    """Redis, two CPU workers, the gateway (healthy by its healthcheck) and Flower, run from the file, serve vae."""
    prefix = f"compose-{uuid.uuid4().hex[:6]}"
    for replica in range(2):
        stack.start("worker", stack.python(services["worker"]["command"]),
                    stack.env("worker", GENSERVE_QUEUE_PREFIX=prefix, GENSERVE_LOG_LEVEL="WARNING",
                              GENSERVE_WORKER__HOSTNAME=f"replica{replica}@%h"))
    command = list(services["gateway"]["command"])  # binds 0.0.0.0:50051 in its container; loopback here
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = "0"
    gateway_log = stack.start("gateway", stack.python(command), stack.env("gateway", GENSERVE_QUEUE_PREFIX=prefix))
    text = wait_for(lambda: re.search(r"ready on 127\.0\.0\.1:(\d+)", gateway_log.read_text()), 120, "the gateway")
    address = f"127.0.0.1:{text.group(1)}"
    flower_port = free_port()
    flower = list(services["flower"]["command"])
    flower = [a for a in flower if not a.startswith(("--port=", "--address="))] + [f"--port={flower_port}", "--address=127.0.0.1"]
    stack.start("flower", stack.python(flower), stack.env("flower", GENSERVE_QUEUE_PREFIX=prefix))

    health = services["gateway"]["healthcheck"]["test"][1:]
    health[health.index("--address") + 1] = address
    assert subprocess.run(stack.python(health), capture_output=True, text=True).stdout.strip() == "SERVING"

    def metrics() -> str:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{flower_port}/metrics", timeout=2).read().decode()
        except OSError:
            return ""

    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        request = inference_pb2.GenerateImagesRequest(model="vae", count=2, seed=4)
        response = stub.GenerateImages(request, timeout=60)
        assert list(response.images.shape) == [2, 1, 28, 28] and response.model == "vae:1"

        def task_events_seen() -> bool:  # Flower turns task events on remotely every few seconds
            stub.GenerateImages(request, timeout=60)
            return 'type="task-succeeded"' in metrics()

        wait_for(task_events_seen, 60, "Flower to receive task-succeeded events")
    assert re.search(r'flower_worker_online\{worker="replica0@[^"]+"\} 1\.0', metrics())
    assert re.search(r'flower_worker_online\{worker="replica1@[^"]+"\} 1\.0', metrics())
