"""Text-generation input files: every JSONL line checked the way CompleteText checks a request.

The gateway reads the caller's file once at submit time and writes the job's `prompts.jsonl`
beside its shards, one line per input line, in order: either the validated task (token ids
and sampling settings, the seed filled in) or the reason the line was refused. Workers read
that file, never the caller's, so a worker needs no tokenizer and a bad line costs no
worker time: it goes straight to errors.jsonl.

A line: {"id": ..., "prompt": "...", and optionally CompleteText's fields: "max_new_tokens",
"temperature", "top_k", "top_p", "repetition_penalty", "stop", "seed"}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genserve.services import validation
from genserve.services.validation.text_generation import Tokenizer
from google.protobuf import json_format

from genserve import seeds
from genserve.errors import InvalidArgumentError
from genserve.repository import Manifest
from genserve.settings import LimitSettings
from genserve.v1 import inference_pb2

DEFAULT_MAX_NEW_TOKENS = 64  # of a line that sets none, when the job sets none either
FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop", "seed")


def check_line(raw: bytes, line: int, manifest: Manifest, limits: LimitSettings, tokenizer: Tokenizer,
               job_seed: int, max_new_tokens: int) -> dict[str, Any]:
    """The prepared line: {"line", "id", "task"} or {"line", "id"?, "error"}."""
    try:
        item = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {"line": line, "error": f"not valid JSON: {exc}"}
    if not isinstance(item, dict):
        return {"line": line, "error": f"a line must be a JSON object, got {type(item).__name__}"}
    if "id" not in item:
        return {"line": line, "error": "missing 'id'"}
    out: dict[str, Any] = {"line": line, "id": str(item.pop("id"))}
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        return {**out, "error": f"unknown fields {unknown}; a line may have id, {', '.join(FIELDS)}"}
    if not isinstance(item.get("prompt"), str):
        return {**out, "error": "'prompt' must be a string"}
    item.setdefault("max_new_tokens", max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
    item.setdefault("seed", seeds.line_seed(job_seed, line))
    try:
        request = json_format.ParseDict({**item, "model": manifest.ref}, inference_pb2.GenerateTextRequest())
        params = validation.generate_text(request, manifest, limits, tokenizer, "CompleteText")
    except (json_format.ParseError, InvalidArgumentError) as exc:
        return {**out, "error": str(exc)}
    return {**out, "task": params.to_task()}


def prepare(source: Path, target: Path, manifest: Manifest, limits: LimitSettings, tokenizer: Tokenizer,
            job_seed: int, max_new_tokens: int) -> int:
    """Write the prepared lines of `source` to `target` (atomically); how many were refused."""
    refused = 0
    tmp = target.with_name(f".{target.name}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as lines, open(tmp, "wb") as out:
        for line, raw in enumerate(lines):
            row = check_line(raw, line, manifest, limits, tokenizer, job_seed, max_new_tokens)
            refused += "error" in row
            out.write(json.dumps(row).encode() + b"\n")
    tmp.replace(target)
    return refused
