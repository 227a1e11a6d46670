"""Model administration through a real gateway: SetDefaultVersion pins what a bare name serves
(every gateway on the repository follows), RescanRepository reports what changed, both need
the `admin` permission, and bad requests get clear errors."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from genserve.repository import MANIFEST
from genserve.settings import AuthSettings, GatewaySettings, Settings
from genserve.v1 import inference_pb2, models_pb2
from tests.services.test_auth import ADMIN, INFER, JOBS, KEYS, code_of
from tests.support import GatewayThread

pytestmark = pytest.mark.integration


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def copy_version(root: Path, name: str, source: str, version: str) -> Path:
    """`name:source` published again as `name:version` (same graph, its manifest says `version`)."""
    target = root / name / version
    shutil.copytree(root / name / source, target)
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["version"] = version
    (target / MANIFEST).write_text(json.dumps(manifest))
    return target


def inverted_copy(root: Path, name: str, source: str, version: str) -> Path:
    """`name:source` as `name:version` whose images are 1 - the source's: the same signature,
    outputs that tell the two versions apart."""
    import onnx
    from onnx import helper

    from genserve.repository import sha256_file

    target = copy_version(root, name, source, version)
    model = onnx.load(str(target / "model.onnx"))
    for node in model.graph.node:
        node.output[:] = ["image_raw" if o == "image" else o for o in node.output]
    one = helper.make_tensor("one", onnx.TensorProto.FLOAT, [], [1.0])
    model.graph.node.extend([helper.make_node("Constant", [], ["one"], value=one),
                             helper.make_node("Sub", ["one", "image_raw"], ["image"])])
    onnx.save_model(model, str(target / "model.onnx"))
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["files"]["model"]["sha256"] = sha256_file(target / "model.onnx")
    (target / MANIFEST).write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def admin_repo(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the test repository with vae:1, vae:2 (its images inverted) and cvae:1, plus
    cvae:2 whose graph no longer matches its sha256 (not ready). A copy: pins must not leak
    into other tests."""
    root = tmp_path_factory.mktemp("admin-repository")
    for name in ("vae", "cvae"):
        shutil.copytree(repo / name, root / name)
    inverted_copy(root, "vae", "1", "2")
    with open(copy_version(root, "cvae", "1", "2") / "model.onnx", "ab") as f:
        f.write(b"\0")
    return root


@pytest.fixture(scope="module")
def secured(admin_repo: Path):
    settings = Settings(model_repository=admin_repo, gateway=GatewaySettings(port=0), auth=AuthSettings(api_keys=KEYS))
    with GatewayThread(settings) as gw:
        yield gw


def pin(gw: GatewayThread, model: str, version: str = "", key: str = ADMIN) -> models_pb2.ModelInfo:
    return gw.models.SetDefaultVersion(models_pb2.SetDefaultVersionRequest(model=model, version=version),
                                       metadata=bearer(key), timeout=30)


def generate(gw: GatewayThread, model: str = "vae") -> tuple[str, np.ndarray]:
    """The version GenerateImages for `model` says it answered from, and its images."""
    from genserve.tensors import from_proto

    request = inference_pb2.GenerateImagesRequest(model=model, count=2, seed=3)
    reply = gw.inference.GenerateImages(request, metadata=bearer(INFER), timeout=60)
    return reply.model, from_proto(reply.images, "images")


def served(gw: GatewayThread, model: str = "vae") -> str:
    """The version GenerateImages for `model` answered from, checked against its images: vae:2's
    are 1 - vae:1's, so the images show which graph really ran."""
    ref, images = generate(gw, model)
    if ref.startswith("vae:"):
        _, first = generate(gw, "vae:1")
        expected = 1.0 - first if ref == "vae:2" else first  # vae:3, when there, is a copy of vae:1
        assert np.allclose(images, expected, atol=1e-6), f"{ref}'s images are not its own"
    return ref


def flags(gw: GatewayThread, name: str = "vae") -> list[tuple[str, bool, bool]]:
    listed = gw.models.ListModels(models_pb2.ListModelsRequest(), metadata=bearer(INFER), timeout=30).models
    return [(m.version, m.latest, m.pinned) for m in listed if m.name == name]


def test_only_an_admin_key_may_pin_or_rescan(secured, admin_repo: Path):
    """inference and jobs keys: PERMISSION_DENIED naming `admin`, nothing written; reads stay
    `inference`; an admin key pins and rescans."""
    rescan = models_pb2.RescanRepositoryRequest()
    for key in (INFER, JOBS):
        code, details = code_of(lambda: pin(secured, "vae", "1", key=key))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "`admin`" in details and "SetDefaultVersion" in details
        code, details = code_of(lambda: secured.models.RescanRepository(rescan, metadata=bearer(key), timeout=30))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "`admin`" in details
    code, _ = code_of(lambda: secured.models.RescanRepository(rescan, timeout=30))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert not (admin_repo / "vae" / "default_version").exists()
    assert secured.models.GetModel(models_pb2.GetModelRequest(model="vae"), metadata=bearer(INFER), timeout=30).version == "2"
    code, _ = code_of(lambda: secured.models.GetModel(models_pb2.GetModelRequest(model="vae"), metadata=bearer(JOBS), timeout=30))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert pin(secured, "vae").version == "2"  # admin: an unpin of an unpinned model is a no-op
    found = secured.models.RescanRepository(rescan, metadata=bearer(ADMIN), timeout=30)
    assert {(m.name, m.version) for m in found.models} == {("vae", "1"), ("vae", "2"), ("cvae", "1"), ("cvae", "2")}


def test_a_pinned_older_version_serves_the_bare_name_until_unpinned(secured, admin_repo: Path):
    """vae -> vae:2; pinned to 1 -> vae:1 (GenerateImages, GetModel, ListModels), and still vae:1
    after vae:3 is published; unpinned -> the newest, vae:3; rescans report vae:3 added, removed."""
    assert served(secured) == "vae:2" and flags(secured) == [("1", False, False), ("2", True, False)]
    info = pin(secured, "vae", "1")
    assert (info.name, info.version, info.latest, info.pinned, info.ready) == ("vae", "1", True, True, True)
    assert (admin_repo / "vae" / "default_version").read_text() == "1\n"
    assert served(secured) == "vae:1" and served(secured, "vae:2") == "vae:2"
    assert flags(secured) == [("1", True, True), ("2", False, False)]
    try:
        copy_version(admin_repo, "vae", "1", "3")
        rescan = secured.models.RescanRepository(models_pb2.RescanRepositoryRequest(), metadata=bearer(ADMIN), timeout=30)
        assert list(rescan.added) == ["vae:3"] and list(rescan.removed) == [] and list(rescan.unreadable) == []
        assert [(m.version, m.latest, m.pinned) for m in rescan.models if m.name == "vae"] == [
            ("1", True, True), ("2", False, False), ("3", False, False)], "a new version does not override a pin"
        assert served(secured) == "vae:1"
        info = pin(secured, "vae")
        assert (info.version, info.latest, info.pinned) == ("3", True, False)
        assert not (admin_repo / "vae" / "default_version").exists() and served(secured) == "vae:3"
    finally:
        shutil.rmtree(admin_repo / "vae" / "3")
        (admin_repo / "vae" / "default_version").unlink(missing_ok=True)
    rescan = secured.models.RescanRepository(models_pb2.RescanRepositoryRequest(), metadata=bearer(ADMIN), timeout=30)
    assert list(rescan.added) == [] and list(rescan.removed) == ["vae:3"] and served(secured) == "vae:2"


def test_a_newest_version_that_is_not_ready_does_not_take_the_bare_name(secured, admin_repo: Path):
    """cvae:2 fails its sha256, so cvae goes to cvae:1; vae:3 published with a broken graph
    leaves vae on vae:2 until its file verifies, then vae:3 takes over."""
    info = secured.models.GetModel(models_pb2.GetModelRequest(model="cvae"), metadata=bearer(INFER), timeout=30)
    assert (info.version, info.latest, info.pinned) == ("1", True, False)
    assert [(m.version, m.latest, m.ready) for m in secured.models.ListModels(
        models_pb2.ListModelsRequest(), metadata=bearer(INFER), timeout=30).models if m.name == "cvae"] == [
        ("1", True, True), ("2", False, False)]
    rescan = models_pb2.RescanRepositoryRequest()
    try:
        good = (copy_version(admin_repo, "vae", "1", "3") / "model.onnx").read_bytes()
        (admin_repo / "vae" / "3" / "model.onnx").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        assert list(secured.models.RescanRepository(rescan, metadata=bearer(ADMIN), timeout=30).added) == ["vae:3"]
        assert served(secured) == "vae:2" and flags(secured) == [("1", False, False), ("2", True, False), ("3", False, False)]
        (admin_repo / "vae" / "3" / "model.onnx").write_bytes(good)
        secured.models.RescanRepository(rescan, metadata=bearer(ADMIN), timeout=30)
        assert served(secured) == "vae:3"
    finally:
        shutil.rmtree(admin_repo / "vae" / "3", ignore_errors=True)
    secured.models.RescanRepository(rescan, metadata=bearer(ADMIN), timeout=30)
    assert served(secured) == "vae:2"


def test_bad_pins_get_clear_errors_and_change_nothing(secured, admin_repo: Path):
    """A versioned or malformed name, a bad version: INVALID_ARGUMENT; an unknown model or
    version: NOT_FOUND listing what exists; a version that is not ready: FAILED_PRECONDITION."""
    cases = [
        (("vae:1", "1"), grpc.StatusCode.INVALID_ARGUMENT, "without a version"),
        (("", "1"), grpc.StatusCode.INVALID_ARGUMENT, "model must be a name"),
        (("../vae", "1"), grpc.StatusCode.INVALID_ARGUMENT, "model name must match"),
        (("vae", "x"), grpc.StatusCode.INVALID_ARGUMENT, "version must be a positive integer"),
        (("vae", "0"), grpc.StatusCode.INVALID_ARGUMENT, "version must be a positive integer"),
        (("nope", "1"), grpc.StatusCode.NOT_FOUND, "available models: cvae, vae"),
        (("nope", ""), grpc.StatusCode.NOT_FOUND, "available models: cvae, vae"),
        (("vae", "9"), grpc.StatusCode.NOT_FOUND, "versions: 1, 2"),
        (("cvae", "2"), grpc.StatusCode.FAILED_PRECONDITION, "cvae:2, it is not ready: cvae:2: sha256 of model.onnx"),
    ]
    for (model, version), status, message in cases:
        code, details = code_of(lambda: pin(secured, model, version))
        assert (code, message in details) == (status, True), (model, version, code, details)
    assert not any((admin_repo / name / "default_version").exists() for name in ("vae", "cvae"))
    assert served(secured) == "vae:2"


def test_rescan_reports_a_version_whose_manifest_cannot_be_read(secured, admin_repo: Path):
    """A version directory with a garbled manifest.json is listed as unreadable, not served."""
    broken = admin_repo / "vae" / "7"
    broken.mkdir()
    (broken / MANIFEST).write_text("{not json")
    try:
        rescan = secured.models.RescanRepository(models_pb2.RescanRepositoryRequest(), metadata=bearer(ADMIN), timeout=30)
        assert [u.split(":", 2)[:2] for u in rescan.unreadable] == [["vae", "7"]]
        assert "manifest of vae:7 is invalid" in rescan.unreadable[0] and served(secured) == "vae:2"
    finally:
        shutil.rmtree(broken)


def test_every_gateway_on_the_repository_follows_a_pin(secured, admin_repo: Path):
    """A pin made through one gateway reaches a second one (no auth, 0.2 s manifest cache)
    within its cache's lifetime, without a rescan there."""
    other_settings = Settings(model_repository=admin_repo, gateway=GatewaySettings(port=0, manifest_ttl_s=0.2))
    with GatewayThread(other_settings) as other:
        assert served(other) == "vae:2"
        try:
            pin(secured, "vae", "1")
            time.sleep(0.3)
            assert served(other) == "vae:1"
            assert other.models.GetModel(models_pb2.GetModelRequest(model="vae"), timeout=30).pinned
        finally:
            pin(secured, "vae")
        time.sleep(0.3)
        assert served(other) == "vae:2" and served(secured) == "vae:2"


def test_clients_pin_and_rescan_with_an_admin_key(secured, admin_repo: Path):
    """Client.set_default_version / rescan_repository and their AsyncClient twins; an inference
    key raises GenserveRpcError with PERMISSION_DENIED."""
    import asyncio

    from genserve.aio_client import AsyncClient
    from genserve.client import Client, GenserveRpcError

    with Client(secured.address, api_key=INFER) as client, pytest.raises(GenserveRpcError) as denied:
        client.set_default_version("vae", "1")
    assert denied.value.status == grpc.StatusCode.PERMISSION_DENIED
    with Client(secured.address, api_key=ADMIN) as client:
        try:
            assert client.set_default_version("vae", "1").pinned and served(secured) == "vae:1"
            assert [m.version for m in client.rescan_repository().models if m.latest and m.name == "vae"] == ["1"]
        finally:
            assert client.set_default_version("vae", None).version == "2"

    async def run() -> tuple[str, list[str]]:
        async with AsyncClient(secured.address, api_key=ADMIN) as client:
            pinned = await client.set_default_version("vae", "1")
            await client.set_default_version("vae", None)
            return pinned.version, list((await client.rescan_repository()).removed)

    assert asyncio.run(run()) == ("1", []) and served(secured) == "vae:2"


def test_models_commands_pin_unpin_and_rescan(secured, admin_repo: Path, tmp_path: Path):
    """`genserve models pin|unpin|rescan` with an admin key file; an inference key exits 1 with
    PERMISSION_DENIED; `genserve models` marks each name's default version."""
    import subprocess
    import sys

    def genserve(*args: str, key: str = ADMIN) -> subprocess.CompletedProcess:
        (tmp_path / "key").write_text(key + "\n")
        return subprocess.run([sys.executable, "-m", "genserve", "models", *args, "--address", secured.address,
                               "--api-key-file", str(tmp_path / "key")], capture_output=True, text=True, timeout=120)

    denied = genserve("pin", "vae", "1", key=INFER)
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr and "Traceback" not in denied.stderr
    try:
        done = genserve("pin", "vae", "1")
        assert done.returncode == 0 and done.stdout.strip() == "vae now serves vae:1 (pinned)", done.stderr
        listing = subprocess.run([sys.executable, "-m", "genserve", "models", "--repository", str(admin_repo)],
                                 capture_output=True, text=True, timeout=120).stdout
        assert [line.split()[0] for line in listing.splitlines() if line.endswith("(default, pinned)")] == ["vae:1"]
        rescan = genserve("rescan")
        assert rescan.returncode == 0 and "4 version(s); 0 added, 0 removed, 0 unreadable" in rescan.stdout
        assert any(line.split()[:3] == ["vae:1", "default,", "pinned"] for line in rescan.stdout.splitlines())
        assert any(line.startswith("cvae:2") and "NOT READY: cvae:2: sha256" in line for line in rescan.stdout.splitlines())
    finally:
        done = genserve("unpin", "vae")
    assert done.returncode == 0 and done.stdout.strip() == "vae now serves vae:2 (the newest ready)"
    bad = genserve("pin", "vae", "9")
    assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr and "versions: 1, 2" in bad.stderr


def test_workers_behind_redis_run_the_pinned_version(admin_repo: Path, redis_url: str):
    """Distributed: the gateway resolves the pin and sends "vae:1" through Redis to a worker
    process, whose images are vae:1's; unpinned, the worker runs vae:2 again."""
    import uuid

    from tests.conftest import WorkerProcess, distributed_settings

    prefix = f"admin-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(admin_repo, redis_url, prefix)
    try:
        with GatewayThread(distributed_settings(admin_repo, redis_url, prefix)) as gw:
            gw.wait_for_model("vae:2", timeout_s=90)
            assert served(gw) == "vae:2"
            try:
                assert pin(gw, "vae", "1").pinned and served(gw) == "vae:1"
            finally:
                pin(gw, "vae")
            assert served(gw) == "vae:2"
    finally:
        worker.stop()
