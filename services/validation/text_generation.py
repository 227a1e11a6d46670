"""GenerateText, CompleteText and ScoreText: sampling settings, the prompt against the model's
context (tokenized here, with the model's own tokenizer), texts to score within the limits."""

from __future__ import annotations

import math
import secrets
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from genserve.errors import InvalidArgumentError
from genserve.repository import Manifest
from genserve.services.validation.common import require_rpc, validate
from genserve.settings import LimitSettings
from genserve.v1 import inference_pb2

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
    return validate(GenerateTextInput, raw, manifest, limits)


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
    return validate(ScoreTextInput, {"num_bytes": size, "ids": tokenizer.encode(request.text)}, manifest, limits)
