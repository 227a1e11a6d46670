"""Access control for the gateway: API keys with per-key permissions, and TLS credentials.

A caller sends `authorization: Bearer <key>` metadata. Without a valid key the call ends
UNAUTHENTICATED; with a key that lacks the RPC's permission, PERMISSION_DENIED. Permissions:

    inference   InferenceService, the KServe v2 GRPCInferenceService, ModelService's reads
                (ListModels, GetModel)
    jobs        JobService
    admin       model administration (ADMIN_METHODS: ModelService's SetDefaultVersion and
                RescanRepository) and everything else; an admin key may call every RPC

Health and reflection are open unless configured otherwise (load balancers and grpcurl probe
them without keys). Keys come from a file (`<key> <perm>,<perm>` per line, `#` comments) or
the GENSERVE_AUTH__API_KEYS variable (the same lines, `;`-separated); only their sha256 is
kept, compared in constant time, and no key (nor the header) is ever logged or echoed.
Auth is off when no key is configured.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

import grpc

from genserve.settings import AuthSettings, GatewaySettings

log = logging.getLogger(__name__)

PERMISSIONS = ("inference", "jobs", "admin")
SERVICE_PERMISSIONS = {
    "genserve.v1.InferenceService": "inference",
    "inference.GRPCInferenceService": "inference",
    "genserve.v1.ModelService": "inference",
    "genserve.v1.JobService": "jobs",
}
# Model administration: the ModelService RPCs that need `admin` (its reads need `inference`).
ADMIN_METHODS: frozenset[str] = frozenset({
    "/genserve.v1.ModelService/SetDefaultVersion",
    "/genserve.v1.ModelService/RescanRepository",
})
HEALTH = "grpc.health.v1.Health"
REFLECTION = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")


class AuthConfigError(ValueError):
    """An API key line that cannot be used (unknown permission, missing key)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(text: str) -> dict[bytes, frozenset[str]]:
    """sha256(key) -> permissions, from `<key> <perm>,<perm>` lines (or `;`-separated)."""
    keys: dict[bytes, frozenset[str]] = {}
    for number, line in enumerate(text.replace(";", "\n").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, perms = line.partition(" ")
        granted = frozenset(p.strip() for p in perms.split(",") if p.strip()) or frozenset({"inference"})
        unknown = granted - set(PERMISSIONS)
        if unknown:  # the line number only: the key itself is a secret
            raise AuthConfigError(f"API key line {number}: unknown permission(s) {sorted(unknown)}; "
                                  f"allowed: {', '.join(PERMISSIONS)}")
        keys[_digest(key)] = granted
    return keys


def load_keys(settings: AuthSettings) -> dict[bytes, frozenset[str]]:
    text = settings.api_keys or ""
    if settings.api_keys_file is not None:
        text += "\n" + Path(settings.api_keys_file).read_text()
    return parse_keys(text)


def required_permission(method: str, settings: AuthSettings) -> str | None:
    """The permission an RPC path needs; "": any valid key; None: open to anyone."""
    service = method.lstrip("/").rpartition("/")[0]
    if service == HEALTH:
        return None if settings.open_health else ""
    if service in REFLECTION:
        return None if settings.open_reflection else ""
    if method in ADMIN_METHODS:
        return "admin"
    return SERVICE_PERMISSIONS.get(service, "admin")


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that ends the call with `code`."""
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover  (makes this an async generator)

    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary, **kw)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming, **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary, **kw)
    return grpc.stream_stream_rpc_method_handler(streaming, **kw)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED without a valid key, PERMISSION_DENIED without the RPC's permission."""

    def __init__(self, settings: AuthSettings, keys: dict[bytes, frozenset[str]]) -> None:
        self._settings = settings
        self._keys = keys

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        needed = required_permission(details.method, self._settings)
        if handler is None or needed is None:
            return handler
        key = _bearer(details.invocation_metadata)
        granted = self._lookup(key) if key else None
        if granted is None:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                            "a valid API key is required (metadata `authorization: Bearer <key>`)")
        if needed and needed not in granted and "admin" not in granted:
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                            f"this API key lacks the `{needed}` permission for {details.method}")
        return handler

    def _lookup(self, key: str) -> frozenset[str] | None:
        digest, found = _digest(key), None
        for known, perms in self._keys.items():  # every entry compared: no timing hint of a near miss
            if hmac.compare_digest(known, digest):
                found = perms
        return found


def interceptors(settings: AuthSettings) -> list[grpc.aio.ServerInterceptor]:
    """The auth interceptor when any key is configured, else none (auth off)."""
    keys = load_keys(settings)
    if not keys:
        return []
    log.info("API keys required: %d key(s) configured", len(keys))
    return [AuthInterceptor(settings, keys)]


def server_credentials(gateway: GatewaySettings) -> grpc.ServerCredentials | None:
    """TLS from tls_cert/tls_key; with tls_client_ca, mutual TLS (client certificates required)."""
    if not gateway.tls_cert:
        return None
    if not gateway.tls_key:
        raise AuthConfigError("tls_cert is set but tls_key is not")
    chain = (Path(gateway.tls_key).read_bytes(), Path(gateway.tls_cert).read_bytes())
    ca = Path(gateway.tls_client_ca).read_bytes() if gateway.tls_client_ca else None
    return grpc.ssl_server_credentials([chain], root_certificates=ca, require_client_auth=ca is not None)
