"""The asyncio client: `genserve.client.Client`'s methods on a grpc.aio channel.

    async with AsyncClient("127.0.0.1:50051") as client:
        (await client.generate_images("vae", 64, seed=1)).images        # (64, 1, 28, 28)
        (await client.encode_images("vae", digits, reconstruct=True)).reconstructions
        async for chunk in client.stream_text("gpt", "The assert", max_new_tokens=64, seed=3):
            print(chunk.text, end="", flush=True)
        (await client.complete_text("gpt", "The assert")).text
        (await client.classify_texts("textclf", ["Return the path's base name."]))[0][0]

Same arguments, same return types (numpy arrays and the dataclasses of genserve.client), and
the same single error type: a failed call or stream raises genserve.client.GenserveRpcError.
Many calls may be in flight at once on one client (one HTTP/2 connection); that is what it is
for: a load generator, a web handler, a pipeline that fans requests out.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Sequence

import numpy as np

from genserve.client import (EncodedImages, GeneratedImages, GeneratedText, GenserveRpcError, TextScore, _encode_request,
                             _encoded, _finish_reason, _tokens)
from genserve.rpc import guard_aio
from genserve.tensors import from_proto
from genserve.v1 import inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc

__all__ = ["AsyncClient", "GenserveRpcError"]


def _text_request(model: str, prompt: str, max_new_tokens: int, sampling: dict[str, Any]) -> Any:
    """sampling: temperature, top_k, top_p, repetition_penalty, stop (list), seed, logprobs."""
    return inference_pb2.GenerateTextRequest(model=model, prompt=prompt, max_new_tokens=max_new_tokens,
                                             **{k: v for k, v in sampling.items() if v is not None})


class AsyncClient:
    def __init__(self, address: str, timeout_s: float = 60.0, *, api_key: str | None = None, tls: bool = False,
                 ca: str | None = None, cert: str | None = None, key: str | None = None) -> None:
        from genserve.channels import aio_channel

        self.channel = aio_channel(address, api_key=api_key, tls=tls, ca=ca, cert=cert, key=key)
        self.timeout_s = timeout_s
        self.inference = guard_aio(inference_pb2_grpc.InferenceServiceStub(self.channel))
        self.models = guard_aio(models_pb2_grpc.ModelServiceStub(self.channel))

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the channel connects (TimeoutError after `timeout_s`)."""
        import asyncio

        await asyncio.wait_for(self.channel.channel_ready(), timeout_s)

    async def generate_images(self, model: str, count: int, seed: int | None = None,
                              label: int | None = None) -> GeneratedImages:
        request = inference_pb2.GenerateImagesRequest(model=model, count=count, seed=seed, label=label)
        response = await self.inference.GenerateImages(request, timeout=self.timeout_s)
        return GeneratedImages(from_proto(response.images, "images"), response.seed, response.model)

    async def encode_images(self, model: str, images: np.ndarray, labels: int | Sequence[int] | None = None,
                            reconstruct: bool = False) -> EncodedImages:
        """EncodeImages: posterior mean and log-variance of each image; with `reconstruct`, decoder(mean)."""
        response = await self.inference.EncodeImages(_encode_request(model, images, labels, reconstruct),
                                                     timeout=self.timeout_s)
        return _encoded(response)

    async def stream_text(self, model: str, prompt: str, max_new_tokens: int = 64,
                          **sampling: Any) -> AsyncIterator[GeneratedText]:
        """GenerateText: one GeneratedText per streamed chunk; the last carries the finish
        reason. Leaving the `async for` early (or closing the generator) cancels the generation."""
        call = self.inference.GenerateText(_text_request(model, prompt, max_new_tokens, sampling),
                                           timeout=self.timeout_s)
        try:
            async for chunk in call:
                yield GeneratedText(chunk.text, _tokens(chunk.tokens), _finish_reason(chunk.finish_reason),
                                    chunk.seed, model)
        finally:
            call.cancel()

    async def complete_text(self, model: str, prompt: str, max_new_tokens: int = 64,
                            **sampling: Any) -> GeneratedText:
        """CompleteText: the whole generation at once."""
        response = await self.inference.CompleteText(_text_request(model, prompt, max_new_tokens, sampling),
                                                     timeout=self.timeout_s)
        return GeneratedText(response.text, _tokens(response.tokens), _finish_reason(response.finish_reason),
                             response.seed, response.model)

    async def score_text(self, model: str, text: str) -> TextScore:
        """ScoreText: the log-likelihood of `text` under a language model."""
        response = await self.inference.ScoreText(inference_pb2.ScoreTextRequest(model=model, text=text),
                                                  timeout=self.timeout_s)
        return TextScore(response.log_likelihood, response.num_tokens, response.nats_per_token,
                         response.bits_per_byte, response.model)

    async def classify_texts(self, model: str, texts: list[str], top_k: int = 1) -> list[list[tuple[str, float]]]:
        """Classify: per text, its best `top_k` (label, probability), most probable first."""
        request = inference_pb2.ClassifyRequest(model=model, texts=texts, top_k=top_k)
        response = await self.inference.Classify(request, timeout=self.timeout_s)
        return [[(s.label, s.score) for s in p.top] for p in response.predictions]

    async def list_models(self) -> list[models_pb2.ModelInfo]:
        response = await self.models.ListModels(models_pb2.ListModelsRequest(), timeout=self.timeout_s)
        return list(response.models)

    async def set_default_version(self, model: str, version: str | None) -> models_pb2.ModelInfo:
        """SetDefaultVersion (an `admin` key); None removes the pin. The version now the default."""
        request = models_pb2.SetDefaultVersionRequest(model=model, version=version or "")
        return await self.models.SetDefaultVersion(request, timeout=self.timeout_s)

    async def rescan_repository(self) -> models_pb2.RescanRepositoryResponse:
        """RescanRepository (an `admin` key): added, removed, unreadable versions; every model."""
        return await self.models.RescanRepository(models_pb2.RescanRepositoryRequest(), timeout=self.timeout_s)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
