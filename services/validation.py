"""Request validation with pydantic, before anything is enqueued.

Each RPC's proto request becomes a pydantic model checked against the model's manifest and
the deployment's limits; a failure is an InvalidArgumentError whose message says what was
wrong and what is allowed. What passes is turned into the task's per-request dict.
"""

from __future__ import annotations

import math
import secrets
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from genserve.errors import DeadlineExceededError, InvalidArgumentError
from genserve.repository import Manifest
from genserve.settings import LimitSettings
from genserve.tensors import from_proto, to_wire
from genserve.v1 import inference_pb2

# RPCs each serving loop answers; used to tell clients which call a model wants.
RPCS_BY_LOOP = {
    "latent_sampler": ["GenerateImages"],
    "image_to_image": ["Denoise"],
    "image_classifier": ["Classify"],
    "text_classifier": ["Classify"],
    "autoregressive": ["GenerateText", "CompleteText", "ScoreText"],
}

_ENCODINGS = {
    inference_pb2.IMAGE_ENCODING_TENSOR: (True, False),
    inference_pb2.IMAGE_ENCODING_PNG: (False, True),
    inference_pb2.IMAGE_ENCODING_TENSOR_AND_PNG: (True, True),
}


def require_rpc(manifest: Manifest, rpc: str) -> None:
    served = RPCS_BY_LOOP.get(manifest.loop, [])
    if rpc not in served:
        raise InvalidArgumentError(
            f"model {manifest.ref} is a {manifest.kind} ({manifest.loop}); it serves "
            f"{', '.join(served) or 'no RPC'}, not {rpc}"
        )


def finite_float32(array: np.ndarray, field: str) -> np.ndarray:
    """Client tensors the models read: float32, no NaN or infinity."""
    if array.dtype != np.float32:
        raise ValueError(f"{field} must be DTYPE_FLOAT32, got {array.dtype.name}")
    if not np.isfinite(array).all():
        raise ValueError(f"{field} must be finite (no NaN or infinity)")
    return array


class GenerateImagesInput(BaseModel):
    """A GenerateImages request that passed every check."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    count: int
    seed: int
    label: int | None
    latents: np.ndarray | None
    tensor: bool
    png: bool
    return_latents: bool
    first_index: int = 0  # sample index of the first image in the seed's sequence (genserve/seeds.py)

    @field_validator("latents")
    @classmethod
    def _latents(cls, z: np.ndarray | None, info: ValidationInfo) -> np.ndarray | None:
        if z is None:
            return None
        dim = info.context["manifest"].latent_dim
        if z.ndim != 2 or z.shape[1] != dim:
            raise ValueError(f"latents must have shape (n, {dim}), got {tuple(z.shape)}")
        return finite_float32(z, "latents")

    @field_validator("count")
    @classmethod
    def _count(cls, count: int, info: ValidationInfo) -> int:
        limit = info.context["limits"].max_count
        if not 1 <= count <= limit:
            raise ValueError(f"count must be 1..{limit}, got {count}")
        return count

    @field_validator("label")
    @classmethod
    def _label(cls, label: int | None, info: ValidationInfo) -> int | None:
        manifest: Manifest = info.context["manifest"]
        if label is None:
            if manifest.conditional:
                raise ValueError(
                    f"model {manifest.ref} is class-conditional: label must be 0..{len(manifest.labels) - 1}"
                )
            return None
        if not manifest.conditional:
            raise ValueError(f"model {manifest.ref} is not class-conditional; omit label")
        if not 0 <= label < len(manifest.labels):
            raise ValueError(f"label must be 0..{len(manifest.labels) - 1}, got {label}")
        return label

    def samples(self) -> int:
        return self.count

    def to_task(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "seed": self.seed,
            "label": self.label,
            "latents": to_wire(self.latents) if self.latents is not None else None,
            "tensor": self.tensor,
            "png": self.png,
            "return_latents": self.return_latents,
            "first_index": self.first_index,
        }


def generate_images(request: inference_pb2.GenerateImagesRequest, manifest: Manifest, limits: LimitSettings) -> GenerateImagesInput:
    require_rpc(manifest, "GenerateImages")
    latents = from_proto(request.latents, "latents") if request.latents.shape else None
    count = request.count
    if latents is not None:
        rows = latents.shape[0] if latents.ndim else 0
        if count not in (0, rows):
            raise InvalidArgumentError(f"count must be 0 or the number of latent rows ({rows}), got {count}")
        count = rows
    if request.encoding not in _ENCODINGS:
        raise InvalidArgumentError(f"encoding must be one of {sorted(_ENCODINGS)}, got {request.encoding}")
    tensor, png = _ENCODINGS[request.encoding]
    raw = {
        "count": count,
        "seed": request.seed if request.HasField("seed") else secrets.randbits(63),
        "label": request.label if request.HasField("label") else None,
        "latents": latents,
        "tensor": tensor,
        "png": png,
        "return_latents": request.return_latents,
        "first_index": request.first_index if request.HasField("first_index") else 0,
    }
    if raw["first_index"] + count > 2**64:
        raise InvalidArgumentError(f"first_index + count must be at most 2**64, got {raw['first_index'] + count}")
    return _validate(GenerateImagesInput, raw, manifest, limits)


class ImagesInput(BaseModel):
    """Images for Denoise or Classify, checked against the model's image layout."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    images: np.ndarray  # (N, C, H, W) float32
    tensor: bool = True
    png: bool = False
    top_k: int = 1

    @field_validator("images")
    @classmethod
    def _images(cls, images: np.ndarray, info: ValidationInfo) -> np.ndarray:
        manifest: Manifest = info.context["manifest"]
        limit = info.context["limits"].max_images
        spec = manifest.image
        want = (spec.channels, spec.height, spec.width)
        if images.ndim == 3 and spec.channels == 1:
            images = images[:, None]
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"images must have shape (n, {', '.join(map(str, want))}), got {tuple(images.shape)}")
        if not 1 <= len(images) <= limit:
            raise ValueError(f"the number of images must be 1..{limit}, got {len(images)}")
        return finite_float32(images, "images")

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, top_k: int, info: ValidationInfo) -> int:
        labels = len(info.context["manifest"].labels)
        if top_k == 0:
            return 1
        if not 1 <= top_k <= max(labels, 1):
            raise ValueError(f"top_k must be 1..{labels}, got {top_k}")
        return top_k

    def samples(self) -> int:
        return len(self.images)

    def to_task(self) -> dict[str, Any]:
        return {"images": to_wire(self.images), "tensor": self.tensor, "png": self.png, "top_k": self.top_k}


def _images_from(tensor: Any, pngs: Any, manifest: Manifest) -> np.ndarray:
    if tensor.shape:
        return from_proto(tensor, "images")
    if pngs:
        from genserve.tensors import png_decode

        channels = manifest.image.channels if manifest.image else 1
        decoded = [png_decode(p, channels, f"png[{i}]") for i, p in enumerate(pngs)]
        if len({d.shape for d in decoded}) != 1:
            raise InvalidArgumentError("all PNG images must have the same size")
        return np.stack(decoded)
    raise InvalidArgumentError("give images as a tensor or as PNGs; both are empty")


def denoise(request: inference_pb2.DenoiseRequest, manifest: Manifest, limits: LimitSettings) -> ImagesInput:
    require_rpc(manifest, "Denoise")
    if request.encoding not in _ENCODINGS:
        raise InvalidArgumentError(f"encoding must be one of {sorted(_ENCODINGS)}, got {request.encoding}")
    tensor, png = _ENCODINGS[request.encoding]
    raw = {"images": _images_from(request.images, request.png, manifest), "tensor": tensor, "png": png}
    return _validate(ImagesInput, raw, manifest, limits)


def classify_images(request: inference_pb2.ClassifyRequest, manifest: Manifest, limits: LimitSettings) -> ImagesInput:
    require_rpc(manifest, "Classify")
    if request.texts:
        raise InvalidArgumentError(f"model {manifest.ref} classifies images; texts were given")
    raw = {"images": _images_from(request.images, request.png, manifest), "top_k": request.top_k}
    return _validate(ImagesInput, raw, manifest, limits)


def _validate(schema: type[BaseModel], raw: dict[str, Any], manifest: Manifest, limits: LimitSettings) -> Any:
    try:
        return schema.model_validate(raw, context={"manifest": manifest, "limits": limits})
    except ValidationError as exc:
        raise InvalidArgumentError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        field = ".".join(str(p) for p in error["loc"])
        parts.append(message if field and message.startswith(field) else f"{field}: {message}" if field else message)
    return "; ".join(parts)


def timeout_from(remaining: float | None, default_s: float) -> float:
    """The request's deadline as seconds from now; the default when the client set none."""
    if remaining is None or math.isinf(remaining):
        return default_s
    if remaining <= 0:
        raise DeadlineExceededError("the request's deadline had passed when it arrived")
    return remaining


class TextsInput(BaseModel):
    """Texts for a text classifier's Classify, within the deployment's limits."""

    model_config = ConfigDict(frozen=True)

    texts: list[str]
    top_k: int = 1

    @field_validator("texts")
    @classmethod
    def _texts(cls, texts: list[str], info: ValidationInfo) -> list[str]:
        limits: LimitSettings = info.context["limits"]
        if not 1 <= len(texts) <= limits.max_texts:
            raise ValueError(f"the number of texts must be 1..{limits.max_texts}, got {len(texts)}")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty; each text needs at least one non-space character")
            if len(text) > limits.max_text_chars:
                raise ValueError(f"texts[{i}] has {len(text)} characters; at most {limits.max_text_chars} are allowed")
        return texts

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, top_k: int, info: ValidationInfo) -> int:
        labels = len(info.context["manifest"].labels)
        if top_k == 0:
            return 1
        if not 1 <= top_k <= labels:
            raise ValueError(f"top_k must be 1..{labels} (the model's labels), got {top_k}")
        return top_k

    def samples(self) -> int:
        return len(self.texts)

    def to_task(self) -> dict[str, Any]:
        return {"texts": list(self.texts), "top_k": self.top_k}


def classify_texts(request: inference_pb2.ClassifyRequest, manifest: Manifest, limits: LimitSettings) -> TextsInput:
    """Texts for a text classifier; the worker tokenises them (workers/text.py)."""
    require_rpc(manifest, "Classify")
    if request.images.shape or request.png:
        raise InvalidArgumentError(f"model {manifest.ref} classifies texts; give texts, not images")
    return _validate(TextsInput, {"texts": list(request.texts), "top_k": request.top_k}, manifest, limits)


# --- text generation and scoring (autoregressive models) -----------------------------------

MAX_STOP_STRINGS = 16  # stop sequences per request
MAX_STOP_CHARS = 256  # characters per stop sequence
MAX_TEMPERATURE = 100.0  # beyond this sampling is uniform noise for any model
MAX_REPETITION_PENALTY = 10.0


class GenerateTextInput(BaseModel):
    """A GenerateText/CompleteText request that passed every check; the prompt is tokenized."""

    model_config = ConfigDict(frozen=True)

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    stop: list[str]
    seed: int
    logprobs: bool

    @field_validator("max_new_tokens")
    @classmethod
    def _max_new_tokens(cls, value: int, info: ValidationInfo) -> int:
        context = int(info.context["manifest"].config["block_size"])
        prompt = max(1, len(info.data.get("prompt_ids", [])))  # an empty prompt starts with end-of-text
        if prompt >= context:
            raise ValueError(
                f"the prompt is {prompt} tokens; the model's context is {context} tokens, so a prompt "
                f"may have at most {context - 1}"
            )
        if not 1 <= value <= context - prompt:
            raise ValueError(
                f"max_new_tokens must be 1..{context - prompt} (the context of {context} tokens minus "
                f"the prompt's {prompt}), got {value}"
            )
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if not (math.isfinite(value) and 0.0 <= value <= MAX_TEMPERATURE):
            raise ValueError(f"temperature must be 0 (greedy) .. {MAX_TEMPERATURE:g}, got {value}")
        return value

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, value: int, info: ValidationInfo) -> int:
        vocab = int(info.context["manifest"].config["vocab_size"])
        if not 0 <= value <= vocab:
            raise ValueError(f"top_k must be 0 (off) .. {vocab} (the vocabulary size), got {value}")
        return value

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, value: float) -> float:
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"top_p must be in [0, 1] (0 or 1: off), got {value}")
        return value

    @field_validator("repetition_penalty")
    @classmethod
    def _repetition_penalty(cls, value: float) -> float:
        if not (math.isfinite(value) and 0.0 <= value <= MAX_REPETITION_PENALTY):
            raise ValueError(
                f"repetition_penalty must be in [0, {MAX_REPETITION_PENALTY:g}] (0 or 1: off, >1 penalises), got {value}"
            )
        return value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"stop may hold at most {MAX_STOP_STRINGS} strings, got {len(value)}")
        for s in value:
            if not 1 <= len(s) <= MAX_STOP_CHARS:
                raise ValueError(f"each stop string must be 1..{MAX_STOP_CHARS} characters, got {len(s)}")
        return value

    def to_task(self) -> dict[str, Any]:
        return self.model_dump()


class Tokenizer(Protocol):
    max_token_bytes: int  # UTF-8 bytes of the longest token

    def encode(self, text: str) -> list[int]: ...


def generate_text(
    request: inference_pb2.GenerateTextRequest, manifest: Manifest, limits: LimitSettings, tokenizer: Tokenizer,
    rpc: str = "GenerateText",
) -> GenerateTextInput:
    """Check a generation request against the model's context and vocabulary."""
    require_rpc(manifest, rpc)
    context = int(manifest.config["block_size"])
    size = len(request.prompt.encode())
    if size > context * tokenizer.max_token_bytes:  # cannot fit whatever it tokenizes to: skip the work
        raise InvalidArgumentError(
            f"the prompt is {size} UTF-8 bytes, more than the model's context of {context} tokens can hold"
        )
    raw = {
        "prompt_ids": tokenizer.encode(request.prompt),
        "max_new_tokens": request.max_new_tokens,
        "temperature": request.temperature if request.HasField("temperature") else 1.0,
        "top_k": request.top_k,
        "top_p": request.top_p,
        "repetition_penalty": request.repetition_penalty,
        "stop": list(request.stop),
        "seed": request.seed if request.HasField("seed") else secrets.randbits(63),
        "logprobs": request.logprobs,
    }
    return _validate(GenerateTextInput, raw, manifest, limits)


class ScoreTextInput(BaseModel):
    """A ScoreText request: the text's token ids and its size in UTF-8 bytes."""

    model_config = ConfigDict(frozen=True)

    num_bytes: int
    ids: list[int]

    @field_validator("ids")
    @classmethod
    def _ids(cls, value: list[int]) -> list[int]:
        if len(value) < 2:
            raise ValueError(f"text must have at least 2 tokens to score (the first is not scored), got {len(value)}")
        return value

    def to_task(self) -> dict[str, Any]:
        return {"ids": self.ids}


def score_text(
    request: inference_pb2.ScoreTextRequest, manifest: Manifest, limits: LimitSettings, tokenizer: Tokenizer
) -> ScoreTextInput:
    """Check the text's size before tokenizing it, then that it has something to score."""
    require_rpc(manifest, "ScoreText")
    size = len(request.text.encode())
    if size > limits.max_text_bytes:
        raise InvalidArgumentError(f"text must be at most {limits.max_text_bytes} UTF-8 bytes, got {size}")
    return _validate(ScoreTextInput, {"num_bytes": size, "ids": tokenizer.encode(request.text)}, manifest, limits)
