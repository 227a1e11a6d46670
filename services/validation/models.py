"""ModelService's administrative requests: a bare model name and, for a pin, a version."""

from __future__ import annotations

from genserve.errors import InvalidArgumentError
from genserve.repository import VERSION_RE, parse_model_ref
from genserve.v1 import models_pb2


def default_version(request: models_pb2.SetDefaultVersionRequest) -> tuple[str, str | None]:
    """(name, version); version None removes the pin. The version travels in its own field."""
    name, inline = parse_model_ref(request.model)
    if inline is not None:
        raise InvalidArgumentError(f"model must be a name without a version (e.g. {name!r}), got "
                                   f"{request.model[:80]!r}; give the version in `version`")
    if request.version and not VERSION_RE.match(request.version):
        raise InvalidArgumentError(f"version must be a positive integer such as '1', or empty to remove the pin, "
                                   f"got {request.version[:20]!r}")
    return name, request.version or None
