"""Redis with a password (and TLS): gateway and worker work with the URL alone, end to end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

from genserve.v1 import inference_pb2
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")]

PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server(tmp_path: Path, *args: str) -> subprocess.Popen:
    """A private redis-server (no persistence) with `args`, up before this returns."""
    process = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(tmp_path), *args], stdout=open(tmp_path / "redis.log", "w"),
                               stderr=subprocess.STDOUT)
    time.sleep(0.3)
    assert process.poll() is None, (tmp_path / "redis.log").read_text()
    return process


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = redis_server(tmp_path, "--port", str(port), "--requirepass", PASSWORD)
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    for _ in range(50):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def serve_one_request(repo: Path, url: str, env: dict[str, str] | None = None) -> inference_pb2.GenerateImagesResponse:
    """A `genserve worker` process and a gateway on `url`; one GenerateImages through them."""
    prefix = f"auth-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(repo, url, prefix, env=env)
    try:
        with GatewayThread(distributed_settings(repo, url, prefix)) as gateway:
            gateway.wait_for_model("vae")
            return gateway.inference.GenerateImages(
                inference_pb2.GenerateImagesRequest(model="vae", count=2, seed=3), timeout=30)
    finally:
        worker.stop(keep_log=True)
        assert "NOAUTH" not in worker.output() and "WRONGPASS" not in worker.output(), worker.output()


def test_gateway_and_worker_serve_through_a_password_protected_redis(repo: Path, password_redis: str):
    """redis://:password@host:port/0 is all the gateway and a worker need; without it Redis refuses."""
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(password_redis.replace(f":{PASSWORD}@", "")).ping()
    response = serve_one_request(repo, password_redis)
    assert list(response.images.shape) == [2, 1, 28, 28] and response.model == "vae:1"


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl): (ca, cert, key)."""
    ca, ca_key, cert, key = (directory / n for n in ("ca.crt", "ca.key", "server.crt", "server.key"))

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=genserve-test-ca",
            "-keyout", str(ca_key), "-out", str(ca))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key),
            "-out", str(directory / "server.csr"))
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "1", "-extfile", str(directory / "san.ext"), "-out", str(cert))
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_gateway_and_worker_serve_through_redis_over_tls(repo: Path, tmp_path: Path):
    """rediss://:password@host:port/0?ssl_ca_certs=ca.crt: broker, backend, leases and streams all verify TLS."""
    ca, cert, key = make_certificates(tmp_path)
    port = free_port()
    process = redis_server(tmp_path, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                           "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
                           "--requirepass", PASSWORD)
    try:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
        for _ in range(50):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        response = serve_one_request(repo, url)
        assert list(response.images.shape) == [2, 1, 28, 28]
    finally:
        process.terminate()
        process.wait(timeout=10)
