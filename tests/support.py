"""Test helpers: tiny models built through the real export path, a gateway on a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from genserve.settings import Settings
from genserve.v1 import inference_pb2, inference_pb2_grpc, models_pb2_grpc


def tiny_vae(root: Path, name: str, conditional: bool = False) -> Path:
    """A VAE trained for one epoch on 300 real digits: seconds, through build_vae itself."""
    import torch

    from genserve.export.families.vae.build import build_vae
    from genserve.export.families.vae.model import VAEConfig

    torch.set_num_threads(1)
    config = VAEConfig(latent_dim=4, hidden=(32,), num_classes=10 if conditional else 0)
    return build_vae(root, name=name, config=config, epochs=1, limit=300, progress=False)


TINY_DIGITS = 2000  # the image models' tiny builds train on this many packaged digits


def tiny_image_models(root: Path) -> Path:
    """digits, dae, gan (class mixture) and cgan, tiny, through the real builders: seconds.

    The classifier and denoiser get a few epochs on 2,000 digits so that they measurably work
    (about 80% accuracy, +2 dB at sigma 0.5); the GANs only need to be served, one epoch each.
    """
    import torch

    from genserve.export.core.options import RunOptions
    from genserve.export.families.dae.build import build_dae
    from genserve.export.families.dae.model import DAEConfig
    from genserve.export.families.dcgan.build import build_gan
    from genserve.export.families.dcgan.model import GANConfig
    from genserve.export.families.digits.build import build_digits
    from genserve.export.families.digits.model import CNNConfig

    torch.set_num_threads(1)
    run = RunOptions(limit=TINY_DIGITS, progress=False)
    build_digits(root, config=CNNConfig(widths=(8, 16), features=32), epochs=4, run=run)
    build_dae(root, config=DAEConfig(hidden=(8, 16), latent_dim=16), epochs=4, run=run)
    for name, conditional in (("gan", False), ("cgan", True)):
        config = GANConfig(latent_dim=8, features=4, num_classes=10, aux_classes=10, label_from_latent=not conditional)
        build_gan(root, name=name, config=config, epochs=1, run=RunOptions(limit=300, progress=False),
                  metric_samples=200)
    return root


class GatewayThread:
    """`create_server` on an event loop in a background thread, with sync stubs for tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.gateway: Any = None

    def __enter__(self) -> GatewayThread:
        from genserve.services.server import create_server

        self.thread.start()
        self.gateway = self.call(create_server(self.settings))
        self.address = f"127.0.0.1:{self.gateway.port}"
        # 4096 images are 12.8 MB: raise the client's 4 MB default like the gateway's limit.
        self.channel = grpc.insecure_channel(self.address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.models = models_pb2_grpc.ModelServiceStub(self.channel)
        return self

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_for_model(self, model: str, timeout_s: float = 60) -> None:
        """Block until a worker answers for `model` (workers take a few seconds to start)."""
        end = time.monotonic() + timeout_s
        request = inference_pb2.GenerateImagesRequest(model=model, count=1, seed=0)
        while True:
            try:
                self.inference.GenerateImages(request, timeout=5)
                return
            except grpc.RpcError as exc:
                if time.monotonic() > end or exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise

    def __exit__(self, *exc: object) -> None:
        self.channel.close()
        self.call(self.gateway.stop(0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def tiny_onnx(path: Path, external_location: str = "", doc: str = "") -> Path:
    """A one-MatMul ONNX graph (z (N, 4) -> image (N, 4)) without torch; with
    `external_location`, its weight is stored as external data that names that location."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["z", "w"], ["image"])], "tiny",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=doc)
    if external_location:
        onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
        model = onnx.load(str(path), load_external_data=False)
        for entry in model.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = external_location
    onnx.save_model(model, str(path))
    return path


POISON = 1e6  # a latent above this makes a poisoned model fail (tests of poison requests)


def poisoned_copy(version_dir: Path, root: Path, name: str) -> Path:
    """Copy a latent_sampler version as `<root>/<name>/1` whose graph fails (a Reshape to width
    4 + 1000003) whenever any latent exceeds POISON, and runs unchanged otherwise."""
    import json
    import shutil

    import onnx
    from onnx import TensorProto, helper

    from genserve.repository import MANIFEST, sha256_file

    folder = root / name / "1"
    shutil.copytree(version_dir, folder)
    model = onnx.load(str(folder / "model.onnx"))
    for node in model.graph.node:
        node.input[:] = ["z_guarded" if i == "z" else i for i in node.input]
    const = lambda n, v, t=TensorProto.INT64: helper.make_node(  # noqa: E731
        "Constant", [], [n], value=helper.make_tensor(n, t, [len(v)] if isinstance(v, list) else [], v))
    guard = [
        helper.make_node("ReduceMax", ["z"], ["z_max"], keepdims=0),
        const("limit", [POISON], TensorProto.FLOAT), const("wide", [1000003]), const("four", [4]),
        const("minus_one", [-1]),
        helper.make_node("Greater", ["z_max", "limit"], ["bad"]),
        helper.make_node("Cast", ["bad"], ["bad_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["bad_i", "wide"], ["extra"]),
        helper.make_node("Add", ["four", "extra"], ["width"]),
        helper.make_node("Concat", ["minus_one", "width"], ["shape"], axis=0),
        helper.make_node("Reshape", ["z", "shape"], ["z_guarded"]),
    ]
    nodes = guard + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save_model(model, str(folder / "model.onnx"))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["name"] = name
    manifest["files"]["model"]["sha256"] = sha256_file(folder / "model.onnx")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder
