"""Shared fixtures: a tiny VAE repository, a real Redis, real worker processes, real gateways."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

from genserve.settings import GatewaySettings, Settings
from tests.support import GatewayThread, tiny_image_models, tiny_vae

REDIS_URL = os.environ.get("GENSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding a tiny VAE (v1) and a tiny class-conditional VAE."""
    root = tmp_path_factory.mktemp("repository")
    tiny_vae(root, "vae")
    tiny_vae(root, "cvae", conditional=True)
    return root


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis at {REDIS_URL}: .ci/run starts one; start redis-server or set GENSERVE_TEST_REDIS_URL")
    return REDIS_URL


@pytest.fixture(scope="session")
def queue_prefix() -> str:
    """A queue namespace for this test session, so runs never consume each other's messages."""
    return f"test-{uuid.uuid4().hex[:8]}"


def distributed_settings(repo: Path, redis_url: str, prefix: str, **overrides: object) -> Settings:
    return Settings(model_repository=repo, broker_url=redis_url, queue_prefix=prefix,
                    gateway=GatewaySettings(port=0), **overrides)


class WorkerProcess:
    """`genserve worker` as a child process, as an operator runs it."""

    def __init__(self, repo: Path, redis_url: str, prefix: str, *extra: str, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ, GENSERVE_QUEUE_PREFIX=prefix, PYTHONUNBUFFERED="1", **(env or {}))
        argv = [sys.executable, "-m", "genserve", "worker", "--broker-url", redis_url,
                "--repository", str(repo), "--log-level", "WARNING", "--threads", "1", *extra]
        self.log = open(Path(repo).parent / f"worker-{prefix}-{time.monotonic_ns()}.log", "w+")
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self, keep_log: bool = False) -> None:
        """Terminate (SIGKILL after 20 s); `keep_log` leaves the log readable by output()."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if not keep_log:
            self.log.close()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


@contextlib.contextmanager
def served_through_redis(repo: Path, redis_url: str, name: str, model: str) -> Iterator[GatewayThread]:
    """A gateway and a `genserve worker` process on a private queue prefix `test-<name>-...`,
    yielded once `model` is served through Redis; both stopped after."""
    prefix = f"test-{name}-{uuid.uuid4().hex[:8]}"
    process = WorkerProcess(repo, redis_url, prefix)
    try:
        with GatewayThread(distributed_settings(repo, redis_url, prefix)) as running:
            running.wait_for_model(model)
            yield running
    finally:
        process.stop()


@pytest.fixture(scope="session")
def worker(repo: Path, redis_url: str, queue_prefix: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(repo, redis_url, queue_prefix)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def gateway(repo: Path, redis_url: str, queue_prefix: str, worker: WorkerProcess) -> Iterator[GatewayThread]:
    """A gateway on loopback routing to a real worker process through real Redis."""
    with GatewayThread(distributed_settings(repo, redis_url, queue_prefix)) as running:
        running.wait_for_model("vae")
        yield running


@pytest.fixture(scope="session")
def embedded(repo: Path) -> Iterator[GatewayThread]:
    """A gateway in the embedded mode: no broker, the worker's code in-process."""
    with GatewayThread(Settings(model_repository=repo, gateway=GatewaySettings(port=0))) as running:
        yield running


@pytest.fixture(scope="session")
def image_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of tiny image models: digits (classifier), dae, gan and cgan."""
    pytest.importorskip("torch")
    return tiny_image_models(tmp_path_factory.mktemp("image-repository"))


@pytest.fixture(scope="session")
def image_gateway(image_repo: Path, redis_url: str) -> Iterator[GatewayThread]:
    """A gateway and a `genserve worker` process serving the tiny image models through Redis."""
    with served_through_redis(image_repo, redis_url, "images", "gan") as running:
        yield running
