"""A SERVER span for each RPC of our services, continuing the caller's
`traceparent` (see dtq/tracing.py). Installed only when tracing is on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from dtq import tracing
from dtq.api.intercept import Handler, HandlerWrapper

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]
# Codes that are the server's fault: the span's status is ERROR (OpenTelemetry
# semantic conventions for gRPC servers); the others are the caller's.
SERVER_ERRORS = frozenset(
    c.value[0]
    for c in (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    )
)
CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def server_interceptors(prefix: str = "/dtq.v1.") -> list[grpc.aio.ServerInterceptor]:
    """The interceptors `grpc.aio.server` needs: none when tracing is off."""
    return [RpcSpans(prefix)] if tracing.tracer() else []


class RpcSpans(HandlerWrapper):
    """A SERVER span for each call of a method under `prefix` (our services:
    not health checks or reflection), continuing the caller's `traceparent`.
    Unary calls run with the span current, so SubmitTask stores its context."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        return _traced(handler, method)


def _traced(handler: Handler, method: str) -> Handler:
    # The stubs type handlers as sync functions; grpc.aio's are coroutines.
    h: Any = handler
    service, _, name = method[1:].rpartition("/")
    attrs = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    codec = {
        "request_deserializer": h.request_deserializer,
        "response_serializer": h.response_serializer,
    }
    span_name = method[1:]
    kinds: list[tuple[Any, Any, Any]] = [
        (h.unary_unary, grpc.unary_unary_rpc_method_handler, _unary),
        (h.stream_unary, grpc.stream_unary_rpc_method_handler, _unary),
        (h.unary_stream, grpc.unary_stream_rpc_method_handler, _streaming),
        (h.stream_stream, grpc.stream_stream_rpc_method_handler, _streaming),
    ]
    fn, make, wrap = next(k for k in kinds if k[0] is not None)
    behavior = wrap(fn, span_name, attrs)
    wrapped: Handler = make(behavior, **codec)
    return wrapped


def _unary(
    fn: Callable[[Req, Ctx], Awaitable[Resp]], name: str, attrs: dict[str, str]
) -> Callable[[Req, Ctx], Awaitable[Resp]]:
    async def behavior(request: Req, context: Ctx) -> Resp:
        tracer = tracing.tracer()
        if tracer is None:
            return await fn(request, context)
        with tracer.start_as_current_span(
            name,
            context=_caller(context),
            kind=SpanKind.SERVER,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await fn(request, context)
            except BaseException as error:
                _rpc_ended(span, context, error)
                raise
            _rpc_ended(span, context, None)
            return response

    return behavior


def _streaming(
    fn: Callable[[Req, Ctx], AsyncIterator[Resp]], name: str, attrs: dict[str, str]
) -> Callable[[Req, Ctx], AsyncIterator[Resp]]:
    # Not made current: a stream (a worker's LeaseTasks) may last for days,
    # and a context attached across `yield`s may be detached elsewhere.
    async def behavior(request: Req, context: Ctx) -> AsyncIterator[Resp]:
        tracer = tracing.tracer()
        if tracer is None:
            async for item in fn(request, context):
                yield item
            return
        span = tracer.start_span(name, _caller(context), SpanKind.SERVER, attrs)
        try:
            async for item in fn(request, context):
                yield item
        except BaseException as error:
            _rpc_ended(span, context, error)
            raise
        else:
            _rpc_ended(span, context, None)
        finally:
            span.end()

    return behavior


def _caller(context: Ctx) -> Context | None:
    metadata = context.invocation_metadata()
    return propagate.extract(dict(metadata)) if metadata else None


def _rpc_ended(span: Span, context: Ctx, error: BaseException | None) -> None:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        number = code.value[0]
    elif code is not None:
        number = int(code)
    elif error is None:
        number = 0
    elif isinstance(error, GeneratorExit | asyncio.CancelledError):
        number = grpc.StatusCode.CANCELLED.value[0]
    else:
        number = grpc.StatusCode.UNKNOWN.value[0]
    span.set_attribute("rpc.grpc.status_code", number)
    if number in SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, CODE_NAMES.get(number, str(number))))
