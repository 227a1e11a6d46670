"""What every RPC's validation shares: the RPC and graph checks, finite tensors, pydantic
errors as one INVALID_ARGUMENT message, the request's deadline."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from genserve.errors import DeadlineExceededError, FailedPreconditionError, InvalidArgumentError
from genserve.protocol import RPC_GRAPHS, rpcs_of
from genserve.repository import Manifest
from genserve.settings import LimitSettings


def require_rpc(manifest: Manifest, rpc: str) -> None:
    if rpc not in rpcs_of(manifest.loop):
        served = rpcs_of(manifest.loop, manifest.files)  # what this version answers, graphs considered
        raise InvalidArgumentError(
            f"model {manifest.ref} is a {manifest.kind} ({manifest.loop}); it serves "
            f"{', '.join(served) or 'no RPC'}, not {rpc}"
        )


def require_graph(manifest: Manifest, role: str, needed_by: str) -> None:
    """A graph the request needs besides the serving one; a version published without it (a
    GAN has no encoder, an older VAE no bare decoder) is valid but cannot do this."""
    if role not in manifest.files:
        raise FailedPreconditionError(
            f"model {manifest.ref} has no {role!r} graph ({needed_by} needs one; its graphs: "
            f"{', '.join(manifest.files)}); VAEs exported by this release have it: re-export, or use a newer version"
        )


def require_rpc_graphs(manifest: Manifest, rpc: str) -> None:
    """The loop serves `rpc` (INVALID_ARGUMENT otherwise) and the version has its graphs."""
    require_rpc(manifest, rpc)
    for role in RPC_GRAPHS.get(rpc, ()):
        require_graph(manifest, role, rpc)


def finite_float32(array: np.ndarray, field: str) -> np.ndarray:
    """Client tensors the models read: float32, no NaN or infinity."""
    if array.dtype != np.float32:
        raise ValueError(f"{field} must be DTYPE_FLOAT32, got {array.dtype.name}")
    if not np.isfinite(array).all():
        raise ValueError(f"{field} must be finite (no NaN or infinity)")
    return array


def validate(schema: type[BaseModel], raw: dict[str, Any], manifest: Manifest, limits: LimitSettings) -> Any:
    try:
        return schema.model_validate(raw, context={"manifest": manifest, "limits": limits})
    except ValidationError as exc:
        raise InvalidArgumentError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
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
