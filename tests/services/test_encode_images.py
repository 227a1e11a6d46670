"""EncodeImages end to end: real Redis, a `genserve worker` process, gRPC on loopback, and the
embedded mode; VAEs with a fitted mixture prior, trained in seconds by build_vae itself.

The mixture prior is what makes reconstruction need its own graph: the served decoder takes the
prior's noise (latent_dim + 1 entries), the encoder's mean lives in the VAE's own latent space,
so decode(encode(x)) goes through the bare "decoder" graph. Older versions are simulated by
copying a version and removing graphs from its manifest.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from genserve.client import Client
from genserve.repository import MANIFEST, ModelRepository
from genserve.settings import GatewaySettings, LimitSettings, Settings
from genserve.tensors import from_proto, png_decode, to_proto
from genserve.v1 import inference_pb2, models_pb2
from tests.conftest import served_through_redis
from tests.support import TINY_DIGITS, GatewayThread

pytestmark = pytest.mark.integration

LATENT = 8  # the test VAEs' latent size; their served z has LATENT + 1 entries (mixture prior)
MAX_IMAGES = 64  # the embedded gateway's limit, to test it without sending 1,025 images


def older_copy(root: Path, source: str, name: str, drop: tuple[str, ...]) -> None:
    """`source`'s version 1 published as `name`:1 without the graphs `drop` (as exported before
    they existed): files gone, manifest entries gone."""
    folder = root / name / "1"
    shutil.copytree(root / source / "1", folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["name"] = name
    for role in drop:
        (folder / manifest["files"].pop(role)["path"]).unlink()
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def encode_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mvae (mixture prior), mcvae (conditional, a mixture per class), oldvae (no bare decoder),
    noenc (no encoder either)."""
    pytest.importorskip("torch")
    import torch

    from genserve.export.families.vae.build import build_vae
    from genserve.export.families.vae.model import VAEConfig

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("encode-repository")
    # 10 epochs on 1,800 digits (about 7 s): held-out MSE 0.030 against 0.070 for shuffled latents
    config = VAEConfig(latent_dim=LATENT, hidden=(256,), prior_components=4)
    build_vae(root, name="mvae", config=config, epochs=10, limit=TINY_DIGITS, progress=False)
    conditional = VAEConfig(latent_dim=LATENT, hidden=(256,), prior_components=2, num_classes=10)
    build_vae(root, name="mcvae", config=conditional, epochs=5, limit=TINY_DIGITS, progress=False)
    older_copy(root, "mvae", "oldvae", ("decoder",))
    older_copy(root, "mvae", "noenc", ("decoder", "encoder"))
    return root


@pytest.fixture(scope="module")
def distributed(encode_repo: Path, redis_url: str) -> Iterator[GatewayThread]:
    """A gateway and a `genserve worker` process on a private queue prefix, through Redis."""
    with served_through_redis(encode_repo, redis_url, "encode", "mvae") as running:
        yield running


@pytest.fixture(scope="module")
def local(encode_repo: Path) -> Iterator[GatewayThread]:
    """The embedded mode on the same repository (no broker), max_images lowered."""
    settings = Settings(model_repository=encode_repo, gateway=GatewaySettings(port=0),
                        limits=LimitSettings(max_images=MAX_IMAGES))
    with GatewayThread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def heldout() -> tuple[np.ndarray, np.ndarray]:
    """60 held-out digits of the test VAEs' split (build_vae's digit_split, seed 0): never trained on."""
    from genserve.export.data.mnist import digit_split

    _, _, images, labels, _ = digit_split(None, TINY_DIGITS, 0)
    pick = np.random.default_rng(0).permutation(len(labels))[:60]
    return images[pick], labels[pick]


def encode(gw: GatewayThread, model: str, images: np.ndarray, **fields: object) -> inference_pb2.EncodeImagesResponse:
    request = inference_pb2.EncodeImagesRequest(model=model, images=to_proto(images), **fields)
    return gw.inference.EncodeImages(request, timeout=30)


def decoder(repo: Path, ref: str) -> ort.InferenceSession:
    repository = ModelRepository(repo)
    path = repository.verified_path(repository.resolve(ref), "decoder")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).mean())


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_reconstructions_through_redis_beat_decoded_shuffled_latents(distributed, encode_repo, heldout) -> None:
    """Held-out digits come back from their own posterior mean closer than from another digit's
    (a broken or constant encoder would not): MSE under 60% of the shuffled-latent baseline."""
    x = heldout[0]
    response = encode(distributed, "mvae", x, reconstruct=True)
    mean, logvar = from_proto(response.mean), from_proto(response.log_variance)
    reconstructions = from_proto(response.reconstructions)
    assert response.model == "mvae:1" and mean.shape == logvar.shape == (60, LATENT)
    assert reconstructions.shape == x.shape and 0.0 <= reconstructions.min() and reconstructions.max() <= 1.0
    assert np.isfinite(logvar).all() and (logvar < 1.0).all()  # a trained posterior is narrower than the prior
    (shuffled,) = decoder(encode_repo, "mvae").run(["image"], {"latent": mean[np.roll(np.arange(60), 1)]})
    assert mse(x, reconstructions) < 0.6 * mse(x, shuffled), (mse(x, reconstructions), mse(x, shuffled))


def test_embedded_mode_answers_what_the_worker_answers(distributed, local, heldout) -> None:
    """The same request through Redis and a worker process and in the gateway's own process."""
    x = heldout[0][:7]
    remote, inline = encode(distributed, "mvae", x, reconstruct=True), encode(local, "mvae", x, reconstruct=True)
    for field in ("mean", "log_variance", "reconstructions"):
        np.testing.assert_allclose(from_proto(getattr(inline, field)), from_proto(getattr(remote, field)), atol=1e-6)


@pytest.mark.parametrize("mode", ["distributed", "local"])
def test_encoding_a_batch_equals_encoding_each_image_alone(mode, request, heldout) -> None:
    """One request of 48 images, and 48 concurrent one-image requests (which the gateway groups
    into messages), give each image the same mean, log-variance and reconstruction, to float tolerance."""
    gw: GatewayThread = request.getfixturevalue(mode)
    x = heldout[0][:48]
    together = encode(gw, "mvae", x, reconstruct=True)
    calls = [gw.inference.EncodeImages.future(inference_pb2.EncodeImagesRequest(
        model="mvae", images=to_proto(x[i : i + 1]), reconstruct=True), timeout=30) for i in range(48)]
    alone = [c.result() for c in calls]
    for field in ("mean", "log_variance", "reconstructions"):
        stacked = np.concatenate([from_proto(getattr(r, field)) for r in alone])
        np.testing.assert_allclose(stacked, from_proto(getattr(together, field)), atol=1e-5)
    if mode == "distributed":  # the embedded mode runs small batches inline, as they come
        batches = gw.gateway.dispatcher.batchers()[("mvae:1", "encode_images")].stats.requests_per_batch
        assert max(batches) > 1, "the 48 requests were never batched"


def test_conditional_vae_encodes_with_the_label(distributed, heldout) -> None:
    """mcvae reads a label per image (or one for all); its own label reconstructs better than a wrong one."""
    x, y = heldout[0][:20], heldout[1][:20]
    right = encode(distributed, "mcvae", x, labels=y.tolist(), reconstruct=True)
    wrong = encode(distributed, "mcvae", x, labels=((y + 5) % 10).tolist(), reconstruct=True)
    assert mse(x, from_proto(right.reconstructions)) < mse(x, from_proto(wrong.reconstructions))
    one = encode(distributed, "mcvae", x[:3], labels=[int(y[0])])
    each = encode(distributed, "mcvae", x[:3], labels=[int(y[0])] * 3)
    np.testing.assert_allclose(from_proto(one.mean), from_proto(each.mean), atol=1e-6)
    code, details = code_of(lambda: encode(distributed, "mcvae", x[:2]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "is class-conditional: give labels (0..9)" in details


def test_reconstructions_come_back_as_pngs(local, heldout) -> None:
    """PNG-only: no tensor, one decodable 28x28 PNG per image, equal to the tensor up to 8 bits."""
    x = heldout[0][:3]
    tensor = from_proto(encode(local, "mvae", x, reconstruct=True).reconstructions)
    response = encode(local, "mvae", x, reconstruct=True, encoding=inference_pb2.IMAGE_ENCODING_PNG)
    assert not response.reconstructions.shape and len(response.png) == 3
    decoded = np.stack([png_decode(p, 1, "png") for p in response.png])
    np.testing.assert_allclose(decoded, tensor, atol=1 / 255 + 1e-6)
    assert len(encode(local, "mvae", x).png) == 0 and not encode(local, "mvae", x).reconstructions.shape


@pytest.mark.parametrize("mode", ["distributed", "local"])
def test_bad_inputs_are_invalid_arguments(mode, request) -> None:
    """Shape, dtype, NaN, size limit, labels on an unconditional model: INVALID_ARGUMENT that says
    what is allowed, and nothing reaches a worker."""
    gw: GatewayThread = request.getfixturevalue(mode)
    limit = MAX_IMAGES if mode == "local" else 1024
    cases = [
        (np.zeros((2, 1, 27, 28), np.float32), {}, "images must have shape (n, 1, 28, 28), got (2, 1, 27, 28)"),
        (np.zeros((2, 1, 28, 28), np.float16), {}, "images must be DTYPE_FLOAT32, got float16"),
        (np.full((1, 1, 28, 28), np.inf, np.float32), {}, "images must be finite"),
        (np.zeros((limit + 1, 1, 28, 28), np.float32), {}, f"the number of images must be 1..{limit}, got {limit + 1}"),
        (np.zeros((1, 1, 28, 28), np.float32), {"labels": [3]}, "model mvae:1 is not class-conditional; omit labels"),
        (np.zeros((1, 1, 28, 28), np.float32), {"encoding": 9}, "encoding must be one of [0, 1, 2], got 9"),
    ]
    for images, fields, needle in cases:
        code, details = code_of(lambda: encode(gw, "mvae", images, **fields))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in details, (needle, details)


@pytest.mark.parametrize("mode", ["distributed", "local"])
def test_versions_without_the_graphs_answer_failed_precondition(mode, request, heldout) -> None:
    """An older export without the bare decoder still encodes (the same means) but cannot
    reconstruct; one without an encoder cannot encode; GetModel lists EncodeImages only where it works."""
    gw: GatewayThread = request.getfixturevalue(mode)
    x = heldout[0][:4]
    np.testing.assert_allclose(from_proto(encode(gw, "oldvae", x).mean), from_proto(encode(gw, "mvae", x).mean), atol=1e-6)
    code, details = code_of(lambda: encode(gw, "oldvae", x, reconstruct=True))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "model oldvae:1 has no 'decoder' graph" in details
    code, details = code_of(lambda: encode(gw, "noenc", x))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "model noenc:1 has no 'encoder' graph" in details
    rpcs = {m: list(gw.models.GetModel(models_pb2.GetModelRequest(model=m), timeout=5).rpcs) for m in ("mvae", "noenc")}
    assert rpcs == {"mvae": ["GenerateImages", "EncodeImages"], "noenc": ["GenerateImages"]}


def test_python_clients_encode(local, heldout) -> None:
    """Client.encode_images and AsyncClient.encode_images return the arrays the RPC carries."""
    from genserve.aio_client import AsyncClient

    x = heldout[0][:5]
    with Client(local.address) as client:
        encoded = client.encode_images("mvae", x, reconstruct=True)
        labelled = client.encode_images("mcvae", x, labels=3)
    assert encoded.mean.shape == (5, LATENT) and encoded.reconstructions.shape == x.shape
    assert labelled.reconstructions is None and labelled.model == "mcvae:1"

    async def twin():
        async with AsyncClient(local.address) as client:
            return await client.encode_images("mvae", x, reconstruct=True)

    again = asyncio.run(twin())
    np.testing.assert_array_equal(again.mean, encoded.mean)
    np.testing.assert_array_equal(again.reconstructions, encoded.reconstructions)
