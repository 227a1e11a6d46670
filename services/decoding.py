"""Requests that are not valid protobuf messages end INVALID_ARGUMENT, not UNKNOWN.

grpc decodes a request with the handler's `request_deserializer` before any servicer code
runs, and answers UNKNOWN when that raises (bytes that are no message, invalid UTF-8 in a
string field). This interceptor decodes inside the handler instead, so such a request gets
the table's answer for a bad argument (services/errors.py's rule: client mistakes are
INVALID_ARGUMENT).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import grpc


async def _decode(decode: Callable[[bytes], Any], raw: bytes, context: grpc.aio.ServicerContext) -> Any:
    try:
        return decode(raw)
    except Exception as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"the request is not a valid protobuf message: {type(exc).__name__}")


class DecodingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None or handler.request_streaming:
            return handler
        decode, serialize = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                return await inner(await _decode(decode, raw, context), context)

            return grpc.unary_unary_rpc_method_handler(unary, response_serializer=serialize)
        inner_stream = handler.unary_stream

        async def stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            async for item in inner_stream(await _decode(decode, raw, context), context):
                yield item

        return grpc.unary_stream_rpc_method_handler(stream, response_serializer=serialize)
