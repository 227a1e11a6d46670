"""Client channels to the gateway: plaintext or TLS (optionally mutual), with an API key.

The key travels as `authorization: Bearer <key>` metadata on every call (services/auth.py),
added by a channel interceptor so it works over TLS and plaintext alike; prefer TLS anywhere
but loopback. `tls=True` with no `ca` trusts the system roots.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import grpc

OPTIONS = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _credentials(ca: str | Path | None, cert: str | Path | None, key: str | Path | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=_read(ca), private_key=_read(key),
                                        certificate_chain=_read(cert))


def _metadata(metadata: Any, api_key: str) -> list[tuple[str, str]]:
    return [*(metadata or ()), ("authorization", f"Bearer {api_key}")]


class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                                   "wait_for_ready", "compression")), grpc.ClientCallDetails):
    pass


class _KeyInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                      grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, api_key: str) -> None:
        self._key = api_key

    def _with_key(self, d: Any) -> _Details:
        return _Details(d.method, d.timeout, _metadata(d.metadata, self._key), d.credentials,
                        getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_key(details), request)

    intercept_unary_stream = intercept_unary_unary

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_key(details), requests)

    intercept_stream_stream = intercept_stream_unary


def channel(address: str, api_key: str | None = None, tls: bool = False, ca: str | Path | None = None,
            cert: str | Path | None = None, key: str | Path | None = None) -> grpc.Channel:
    """A sync channel; `cert`/`key` present a client certificate (mutual TLS)."""
    secure = tls or bool(ca or cert)
    raw = (grpc.secure_channel(address, _credentials(ca, cert, key), options=OPTIONS) if secure
           else grpc.insecure_channel(address, options=OPTIONS))
    return grpc.intercept_channel(raw, _KeyInterceptor(api_key)) if api_key else raw


def _aio_interceptors(api_key: str) -> list[Any]:
    def with_key(d: Any) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(d.method, d.timeout, _metadata(d.metadata, api_key), d.credentials,
                                          d.wait_for_ready)

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return await continuation(with_key(details), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return await continuation(with_key(details), request)

    return [UnaryUnary(), UnaryStream()]


def aio_channel(address: str, api_key: str | None = None, tls: bool = False, ca: str | Path | None = None,
                cert: str | Path | None = None, key: str | Path | None = None) -> grpc.aio.Channel:
    """The asyncio twin of `channel`."""
    secure = tls or bool(ca or cert)
    interceptors = _aio_interceptors(api_key) if api_key else None
    if secure:
        return grpc.aio.secure_channel(address, _credentials(ca, cert, key), options=OPTIONS, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=OPTIONS, interceptors=interceptors)
