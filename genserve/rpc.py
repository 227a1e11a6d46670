"""Client-side gRPC plumbing shared by the sync and asyncio clients: one error type.

Every failed call of `genserve.client.Client` and `genserve.aio_client.AsyncClient` raises
`GenserveRpcError`, whatever the transport raised (`grpc.RpcError` from sync stubs,
`grpc.aio.AioRpcError` from asyncio ones, during a call or halfway through a stream). It
subclasses `grpc.RpcError`, so code that already catches that keeps working, and it keeps
grpc's `code()` / `details()` methods beside plain attributes:

    try:
        client.generate_images("vae", 0)
    except GenserveRpcError as exc:
        exc.status, exc.message   # grpc.StatusCode.INVALID_ARGUMENT, "count must be 1..4096, got 0"
        exc.code(), exc.details() # the same two values, as grpc.RpcError spells them

`status` and `message` are attributes; `code()` and `details()` are grpc's methods for the
same values, kept so `except grpc.RpcError as e: e.code()` still works.
The stubs are wrapped once, where a client builds them (`guard` / `guard_aio`), so methods
added to a client later convert errors the same way without doing anything.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

import grpc


class GenserveRpcError(grpc.RpcError):
    """A call to the gateway failed: `status` (a grpc.StatusCode) and `message` say how."""

    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message

    @classmethod
    def of(cls, exc: grpc.RpcError) -> GenserveRpcError:
        if isinstance(exc, GenserveRpcError):
            return exc
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else None
        return cls(code or grpc.StatusCode.UNKNOWN, details or str(exc))

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.message

    def __str__(self) -> str:
        return f"{self.status.name}: {self.message}"


class _Stream:
    """A sync server-streaming call whose iteration raises GenserveRpcError."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            raise GenserveRpcError.of(exc) from None

    def __getattr__(self, name: str) -> Any:  # cancel(), code(), initial_metadata(), ...
        return getattr(self._call, name)


class _AioStream:
    """An asyncio server-streaming call whose iteration raises GenserveRpcError."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            async for item in self._call:
                yield item
        except grpc.RpcError as exc:
            raise GenserveRpcError.of(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _Guarded:
    """A stub whose methods raise GenserveRpcError; streaming methods return wrapped calls."""

    def __init__(self, stub: Any, aio: bool) -> None:
        self._stub = stub
        self._aio = aio

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        streaming = isinstance(method, (grpc.UnaryStreamMultiCallable, grpc.aio.UnaryStreamMultiCallable))
        if streaming:
            wrap = _AioStream if self._aio else _Stream
            return lambda *args, **kwargs: wrap(method(*args, **kwargs))
        if self._aio:
            async def call(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await method(*args, **kwargs)
                except grpc.RpcError as exc:
                    raise GenserveRpcError.of(exc) from None
            return call

        def call_sync(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except grpc.RpcError as exc:
                raise GenserveRpcError.of(exc) from None
        return call_sync


def guard(stub: Any) -> Any:
    """`stub` (a generated sync stub) with every method raising GenserveRpcError."""
    return _Guarded(stub, aio=False)


def guard_aio(stub: Any) -> Any:
    """`stub` (a generated stub on a grpc.aio channel) with every method raising GenserveRpcError."""
    return _Guarded(stub, aio=True)
