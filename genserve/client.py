"""A small synchronous Python client for the gateway (used by the CLI and the demo)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np

from genserve.tensors import from_proto
from genserve.v1 import inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc


@dataclass
class GeneratedImages:
    images: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    seed: int
    model: str


class Client:
    def __init__(self, address: str, timeout_s: float = 60.0) -> None:
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
        ])
        self.timeout_s = timeout_s
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.models = models_pb2_grpc.ModelServiceStub(self.channel)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    def generate_images(self, model: str, count: int, seed: int | None = None, label: int | None = None) -> GeneratedImages:
        request = inference_pb2.GenerateImagesRequest(model=model, count=count, seed=seed, label=label)
        response = self.inference.GenerateImages(request, timeout=self.timeout_s)
        return GeneratedImages(from_proto(response.images, "images"), response.seed, response.model)

    def list_models(self) -> list[models_pb2.ModelInfo]:
        return list(self.models.ListModels(models_pb2.ListModelsRequest(), timeout=self.timeout_s).models)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
