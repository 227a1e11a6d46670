"""A small synchronous Python client for the gateway (used by the CLI and the demo).

    with Client("127.0.0.1:50051") as client:
        client.generate_images("vae", 64, seed=1).images          # (64, 1, 28, 28)
        client.encode_images("vae", digits, reconstruct=True).mean  # (N, 32) posterior means
        for chunk in client.stream_text("gpt", "The assert", max_new_tokens=64, seed=3):
            print(chunk.text, end="", flush=True)                 # token by token
        client.complete_text("gpt", "The assert", stop=["\n\n"]).text
        client.score_text("gpt", "Some held-out prose.").bits_per_byte
        client.classify_texts("textclf", ["Return the path's base name."])[0][0]  # (label, p)
        client.set_default_version("vae", "1")                    # admin: "vae" serves vae:1
        client.rescan_repository().added                          # admin: ["vae:3"], ...

Every failed call raises genserve.client.GenserveRpcError (a grpc.RpcError; genserve/rpc.py)
with the gateway's `status` code and `message` (INVALID_ARGUMENT names the allowed values;
NOT_FOUND lists the models). genserve.aio_client.AsyncClient is the asyncio twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import grpc
import numpy as np

from genserve.rpc import GenserveRpcError, guard
from genserve.jobs.client import JobCalls
from genserve.tensors import from_proto, to_proto
from genserve.v1 import inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc


__all__ = ["Client", "EncodedImages", "GeneratedImages", "GeneratedText", "GenserveRpcError", "TextScore"]


@dataclass
class GeneratedImages:
    images: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    seed: int
    model: str


@dataclass
class EncodedImages:
    mean: np.ndarray  # (N, D) float32: posterior means in the VAE's own latent space
    log_variance: np.ndarray  # (N, D) float32
    reconstructions: np.ndarray | None  # (N, C, H, W) in [0, 1]: decoder(mean), when asked for
    model: str


def _encode_request(model: str, images: np.ndarray, labels: int | Sequence[int] | None,
                    reconstruct: bool) -> inference_pb2.EncodeImagesRequest:
    """labels: one per image, or one int for all (class-conditional models only)."""
    request = inference_pb2.EncodeImagesRequest(model=model, reconstruct=reconstruct)
    to_proto(np.ascontiguousarray(images, dtype=np.float32), request.images)
    if labels is not None:
        request.labels.extend([labels] if isinstance(labels, int) else [int(label) for label in labels])
    return request


def _encoded(response: inference_pb2.EncodeImagesResponse) -> EncodedImages:
    reconstructions = from_proto(response.reconstructions, "reconstructions") if response.reconstructions.shape else None
    return EncodedImages(from_proto(response.mean, "mean"), from_proto(response.log_variance, "log_variance"),
                         reconstructions, response.model)


@dataclass
class GeneratedText:
    text: str
    tokens: list[tuple[int, str, float]]  # (id, text, logprob; 0.0 unless logprobs was asked)
    finish_reason: str  # "length", "stop" or "eos"
    seed: int
    model: str


@dataclass
class TextScore:
    log_likelihood: float  # natural log, summed over the scored tokens
    num_tokens: int
    nats_per_token: float
    bits_per_byte: float
    model: str


def _finish_reason(value: int) -> str:
    return inference_pb2.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()


def _tokens(tokens: Any) -> list[tuple[int, str, float]]:
    return [(t.id, t.text, t.logprob) for t in tokens]


class Client(JobCalls):  # JobCalls: submit_job, watch_job, get_job, list_jobs, cancel_job, fetch_job
    def __init__(self, address: str, timeout_s: float = 60.0, *, api_key: str | None = None, tls: bool = False,
                 ca: str | None = None, cert: str | None = None, key: str | None = None) -> None:
        """`api_key`: sent as `authorization: Bearer`; `tls`/`ca`: TLS; `cert`+`key`: mutual TLS."""
        from genserve.channels import channel

        self.channel = channel(address, api_key=api_key, tls=tls, ca=ca, cert=cert, key=key)
        self.timeout_s = timeout_s
        # Guarded stubs: every method raises GenserveRpcError, not a bare grpc.RpcError.
        self.inference = guard(inference_pb2_grpc.InferenceServiceStub(self.channel))
        self.models = guard(models_pb2_grpc.ModelServiceStub(self.channel))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    def generate_images(self, model: str, count: int, seed: int | None = None, label: int | None = None) -> GeneratedImages:
        request = inference_pb2.GenerateImagesRequest(model=model, count=count, seed=seed, label=label)
        response = self.inference.GenerateImages(request, timeout=self.timeout_s)
        return GeneratedImages(from_proto(response.images, "images"), response.seed, response.model)

    def encode_images(self, model: str, images: np.ndarray, labels: int | Sequence[int] | None = None,
                      reconstruct: bool = False) -> EncodedImages:
        """EncodeImages: posterior mean and log-variance of each image (N, C, H, W) in [0, 1];
        with `reconstruct`, the decoder's image of each mean too."""
        response = self.inference.EncodeImages(_encode_request(model, images, labels, reconstruct), timeout=self.timeout_s)
        return _encoded(response)

    def _text_request(self, model: str, prompt: str, max_new_tokens: int, **sampling: Any) -> Any:
        """sampling: temperature, top_k, top_p, repetition_penalty, stop (list), seed, logprobs."""
        return inference_pb2.GenerateTextRequest(model=model, prompt=prompt, max_new_tokens=max_new_tokens,
                                                 **{k: v for k, v in sampling.items() if v is not None})

    def stream_text(self, model: str, prompt: str, max_new_tokens: int = 64, **sampling: Any) -> Iterator[GeneratedText]:
        """GenerateText: one GeneratedText per streamed chunk (its new text and tokens); the
        last carries the finish reason. Closing the iterator early cancels the generation."""
        request = self._text_request(model, prompt, max_new_tokens, **sampling)
        call = self.inference.GenerateText(request, timeout=self.timeout_s)
        try:
            for chunk in call:
                yield GeneratedText(chunk.text, _tokens(chunk.tokens), _finish_reason(chunk.finish_reason),
                                    chunk.seed, model)
        finally:
            call.cancel()

    def complete_text(self, model: str, prompt: str, max_new_tokens: int = 64, **sampling: Any) -> GeneratedText:
        """CompleteText: the whole generation at once."""
        request = self._text_request(model, prompt, max_new_tokens, **sampling)
        response = self.inference.CompleteText(request, timeout=self.timeout_s)
        return GeneratedText(response.text, _tokens(response.tokens), _finish_reason(response.finish_reason),
                             response.seed, response.model)

    def score_text(self, model: str, text: str) -> TextScore:
        """ScoreText: the log-likelihood of `text` under a language model."""
        response = self.inference.ScoreText(inference_pb2.ScoreTextRequest(model=model, text=text), timeout=self.timeout_s)
        return TextScore(response.log_likelihood, response.num_tokens, response.nats_per_token,
                         response.bits_per_byte, response.model)

    def classify_texts(self, model: str, texts: list[str], top_k: int = 1) -> list[list[tuple[str, float]]]:
        """Classify: per text, its best `top_k` (label, probability), most probable first."""
        request = inference_pb2.ClassifyRequest(model=model, texts=texts, top_k=top_k)
        response = self.inference.Classify(request, timeout=self.timeout_s)
        return [[(s.label, s.score) for s in p.top] for p in response.predictions]

    def list_models(self) -> list[models_pb2.ModelInfo]:
        return list(self.models.ListModels(models_pb2.ListModelsRequest(), timeout=self.timeout_s).models)

    def set_default_version(self, model: str, version: str | None) -> models_pb2.ModelInfo:
        """SetDefaultVersion (an `admin` key): pin what `model` without a version serves; None
        removes the pin (the newest ready version again). Returns the version now the default."""
        request = models_pb2.SetDefaultVersionRequest(model=model, version=version or "")
        return self.models.SetDefaultVersion(request, timeout=self.timeout_s)

    def rescan_repository(self) -> models_pb2.RescanRepositoryResponse:
        """RescanRepository (an `admin` key): the gateway re-reads the repository now; added,
        removed and unreadable versions, and every model as ListModels lists them."""
        return self.models.RescanRepository(models_pb2.RescanRepositoryRequest(), timeout=self.timeout_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
