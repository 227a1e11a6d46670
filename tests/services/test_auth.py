"""Access control: API keys and permissions, TLS and mutual TLS, secrets never echoed or logged,
and the broker refusing task messages it must not run."""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genserve import cli
from genserve.channels import channel
from genserve.client import Client, GenserveRpcError
from genserve.oip import grpc_predict_v2_pb2 as v2, grpc_predict_v2_pb2_grpc as v2_grpc
from genserve.settings import AuthSettings, GatewaySettings, Settings
from genserve.v1 import inference_pb2, inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc, models_pb2
from tests.support import GatewayThread

KEYS = "sk-infer-0123456789 inference; sk-jobs-9876543210 jobs; sk-admin-5555555555 admin"
INFER, JOBS, ADMIN = "sk-infer-0123456789", "sk-jobs-9876543210", "sk-admin-5555555555"


def _settings(repo: Path, **auth: object) -> Settings:
    return Settings(model_repository=repo, gateway=GatewaySettings(port=0), auth=AuthSettings(api_keys=KEYS, **auth))


@pytest.fixture(scope="module")
def secured(repo: Path):
    with GatewayThread(_settings(repo)) as gw:
        yield gw


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_calls_without_a_valid_key_are_unauthenticated(secured):
    """No key, a wrong key, a malformed header: UNAUTHENTICATED on every service, nothing run."""
    request = inference_pb2.GenerateImagesRequest(model="vae", count=1)
    for metadata in ((), (("authorization", "Bearer sk-wrong"),), (("authorization", INFER),)):
        code, details = code_of(lambda: secured.inference.GenerateImages(request, metadata=metadata, timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "API key" in details
    assert code_of(lambda: secured.models.ListModels(models_pb2.ListModelsRequest(), timeout=10))[0] == \
        grpc.StatusCode.UNAUTHENTICATED
    v2_stub = v2_grpc.GRPCInferenceServiceStub(secured.channel)
    assert code_of(lambda: v2_stub.ModelInfer(v2.ModelInferRequest(model_name="vae"), timeout=10))[0] == \
        grpc.StatusCode.UNAUTHENTICATED


def test_each_key_gets_exactly_its_permissions(secured):
    """inference key: inference yes, jobs PERMISSION_DENIED; jobs key: the reverse; admin: both."""
    request = inference_pb2.GenerateImagesRequest(model="vae", count=2, seed=1)
    bearer = lambda key: (("authorization", f"Bearer {key}"),)  # noqa: E731
    assert secured.inference.GenerateImages(request, metadata=bearer(INFER), timeout=30).seed == 1
    assert secured.inference.GenerateImages(request, metadata=bearer(ADMIN), timeout=30).seed == 1
    code, details = code_of(lambda: secured.inference.GenerateImages(request, metadata=bearer(JOBS), timeout=10))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "`inference`" in details
    jobs = jobs_pb2_grpc.JobServiceStub(secured.channel)
    code, details = code_of(lambda: jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=bearer(INFER), timeout=10))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "`jobs`" in details
    for key in (JOBS, ADMIN):  # past auth: the JobService itself answers
        assert isinstance(jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=bearer(key), timeout=10),
                          jobs_pb2.ListJobsResponse)


def test_health_and_reflection_are_open_by_default_and_closable(secured, repo: Path):
    """Health answers without a key; with open_health=False it needs one like any RPC."""
    check = health_pb2.HealthCheckRequest()
    assert health_pb2_grpc.HealthStub(secured.channel).Check(check, timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING
    with GatewayThread(_settings(repo, open_health=False)) as gw:
        health = health_pb2_grpc.HealthStub(gw.channel)
        assert code_of(lambda: health.Check(check, timeout=10))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert health.Check(check, metadata=(("authorization", f"Bearer {INFER}"),), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_client_takes_a_key_and_no_secret_reaches_logs_or_errors(secured, caplog):
    """Client(api_key=...) works; wrong keys fail with a message that does not echo them; the
    gateway logs (at DEBUG) never contain a key."""
    caplog.set_level(logging.DEBUG)
    with Client(secured.address, api_key=INFER) as client:
        assert client.generate_images("vae", 2, seed=4).images.shape == (2, 1, 28, 28)
    with Client(secured.address, api_key="sk-secret-never-shown") as client:
        with pytest.raises(GenserveRpcError) as info:
            client.generate_images("vae", 1)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "sk-secret-never-shown" not in str(info.value)
    for secret in (INFER, JOBS, ADMIN, "sk-secret-never-shown"):
        assert secret not in caplog.text


def _certificates(tmp: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    files: dict[str, Path] = {}

    def issue(name: str, issuer: tuple | None, ca: bool = False, san: list | None = None) -> tuple:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(issuer[0].subject if issuer else subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
        files[f"{name}.crt"] = tmp / f"{name}.crt"
        files[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}.key"] = tmp / f"{name}.key"
        files[f"{name}.key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        return cert, key

    ca = issue("ca", None, ca=True)
    issue("server", ca, san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    issue("client", ca)
    return files


def test_tls_and_mutual_tls(repo: Path, tmp_path: Path):
    """TLS: a client trusting the CA is served and a plaintext one is not; mutual TLS: a client
    without a certificate is refused, one with a certificate the CA signed is served."""
    pem = _certificates(tmp_path)
    gateway = GatewaySettings(port=0, tls_cert=pem["server.crt"], tls_key=pem["server.key"])
    request = inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=2)
    with GatewayThread(Settings(model_repository=repo, gateway=gateway)) as gw:
        with Client(gw.address, ca=str(pem["ca.crt"])) as client:
            assert client.generate_images("vae", 1, seed=2).seed == 2
        plain = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(gw.address))
        assert code_of(lambda: plain.GenerateImages(request, timeout=5))[0] == grpc.StatusCode.UNAVAILABLE
    mutual = gateway.model_copy(update={"tls_client_ca": pem["ca.crt"]})
    with GatewayThread(Settings(model_repository=repo, gateway=mutual, auth=AuthSettings(api_keys=KEYS))) as gw:
        anonymous = inference_pb2_grpc.InferenceServiceStub(channel(gw.address, api_key=INFER, ca=pem["ca.crt"]))
        assert code_of(lambda: anonymous.GenerateImages(request, timeout=5))[0] == grpc.StatusCode.UNAVAILABLE
        with Client(gw.address, api_key=INFER, ca=str(pem["ca.crt"]), cert=str(pem["client.crt"]),
                    key=str(pem["client.key"])) as client:
            assert client.generate_images("vae", 1, seed=2).seed == 2
        key_file = tmp_path / "key"
        key_file.write_text(INFER + "\n")
        out = tmp_path / "grid.png"
        assert cli.main(["generate", "vae", "-n", "2", "--seed", "1", "-o", str(out), "--address", gw.address,
                         "--api-key-file", str(key_file), "--ca", str(pem["ca.crt"]),
                         "--cert", str(pem["client.crt"]), "--key", str(pem["client.key"])]) == 0
        assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.integration
def test_unknown_task_name_pushed_into_the_broker_is_refused(gateway, worker, redis_url: str, queue_prefix: str):
    """A JSON message naming a task the worker does not register is refused: nothing runs, the
    only trace is Celery's NotRegistered failure, and the worker keeps serving."""
    from celery import Celery

    sender = Celery(broker=redis_url, set_as_current=False)
    sender.conf.update(task_serializer="json")
    task_id = uuid.uuid4().hex
    sender.send_task("os.system", args=["touch /tmp/genserve-pwned"], queue=f"{queue_prefix}.vae", task_id=task_id)
    deadline = time.monotonic() + 15
    while "unregistered task" not in worker.output().lower() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "unregistered task" in worker.output().lower()
    stored = redis.Redis.from_url(redis_url).get(f"celery-task-meta-{task_id}")
    assert stored is None or (b"FAILURE" in stored and b"NotRegistered" in stored)
    assert not Path("/tmp/genserve-pwned").exists()
    assert gateway.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=1), timeout=30)


def test_model_administration_needs_admin_and_reads_need_inference():
    """Each ADMIN_METHODS entry is a real ModelService method (a renamed RPC must not slip out
    of `admin`); ListModels/GetModel need `inference`, SetDefaultVersion/RescanRepository `admin`."""
    from genserve.services.auth import ADMIN_METHODS, required_permission

    service = models_pb2.DESCRIPTOR.services_by_name["ModelService"]
    methods = {f"/{service.full_name}/{m.name}" for m in service.methods}
    assert ADMIN_METHODS and ADMIN_METHODS <= methods
    needed = {path.rsplit("/", 1)[1]: required_permission(path, AuthSettings(api_keys=KEYS)) for path in methods}
    assert needed == {"ListModels": "inference", "GetModel": "inference",
                      "SetDefaultVersion": "admin", "RescanRepository": "admin"}
