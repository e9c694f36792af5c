"""Requests whose bytes are not a protobuf message are INVALID_ARGUMENT.

grpc.aio decodes a unary request before any handler runs and answers a decode
failure with UNKNOWN and a message naming Python classes. This interceptor
wraps every method's deserializer: a unary request that does not decode reaches
the handler as `MALFORMED` and is refused with INVALID_ARGUMENT and ErrorInfo
reason MALFORMED_REQUEST; in a request stream the message read raises that
error as a `DtqError`, for the stream's own error mapping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from dtq.api.errors import abort
from dtq.api.intercept import Handler, HandlerWrapper
from dtq.domain.errors import Code, DtqError

Ctx = grpc.aio.ServicerContext[Any, Any]
MALFORMED = object()  # what a unary handler receives for bytes that did not decode


def malformed(method: str) -> DtqError:
    return DtqError(
        Code.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        f"the request is not a valid {method.rpartition('/')[2]} message (protobuf)",
    )


class MalformedRequests(HandlerWrapper):
    """INVALID_ARGUMENT, not UNKNOWN, for request bytes that do not decode (every
    service: ours, health, reflection)."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        return _checked(handler, method)


def _checked(handler: Handler, method: str) -> Handler:
    h: Any = handler  # the stubs type handlers as sync functions; grpc.aio's are coroutines
    decode = h.request_deserializer
    error = malformed(method)

    def lenient(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError:
            return MALFORMED

    def strict(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError:
            raise error from None

    codec = {"response_serializer": h.response_serializer}
    if h.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(h.unary_unary, error), request_deserializer=lenient, **codec
        )
    if h.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(h.unary_stream, error), request_deserializer=lenient, **codec
        )
    if h.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            h.stream_unary, request_deserializer=strict, **codec
        )
    return grpc.stream_stream_rpc_method_handler(
        h.stream_stream, request_deserializer=strict, **codec
    )


def _unary(
    fn: Callable[[Any, Ctx], Awaitable[Any]], error: DtqError
) -> Callable[[Any, Ctx], Awaitable[Any]]:
    async def behavior(request: Any, context: Ctx) -> Any:
        if request is MALFORMED:
            await abort(context, error)
        return await fn(request, context)

    return behavior


def _streaming(
    fn: Callable[[Any, Ctx], AsyncIterator[Any]], error: DtqError
) -> Callable[[Any, Ctx], AsyncIterator[Any]]:
    async def behavior(request: Any, context: Ctx) -> AsyncIterator[Any]:
        if request is MALFORMED:
            await abort(context, error)
        async for item in fn(request, context):
            yield item

    return behavior
