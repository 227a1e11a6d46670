"""The one table from exceptions to gRPC status codes, and the wrapper that applies it.

Anything not in the table is a bug: it is logged with its traceback and the client gets
INTERNAL with a short message, never the traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

from genserve import errors

log = logging.getLogger(__name__)

STATUS: dict[type[Exception], grpc.StatusCode] = {
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.JobNotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.QueueFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.BrokerUnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.ModelNotReadyError: grpc.StatusCode.UNAVAILABLE,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotImplementedYetError: grpc.StatusCode.UNIMPLEMENTED,
    errors.InternalError: grpc.StatusCode.INTERNAL,  # a worker-side failure, already reduced to a short message
}


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind], str(exc)
    log.error("unhandled error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the gateway log"


def unary(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a unary servicer method so every exception becomes a status via the table."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)

    return wrapper


def streaming(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """The same for server-streaming methods."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in method(self, request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)

    return wrapper
