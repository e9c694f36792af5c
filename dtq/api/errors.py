"""One mapping from domain errors to gRPC status, applied by decorators.

A `DtqError` becomes a `google.rpc.Status` with `ErrorInfo(reason,
domain="dtq")`, `BadRequest` field violations and `RetryInfo` where they apply;
Envoy turns that status into a JSON body and the matching HTTP code. An error
with a RetryInfo also carries a `retry-after` trailer (whole seconds, rounded
up): in a trailers-only reply it is a response header, which Envoy passes to
REST clients as HTTP `Retry-After` (429, 503). Anything
else is logged once with its traceback and answered INTERNAL with a generic
message. The decorators also record the call's latency and code.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from dtq import metrics
from dtq.domain.errors import Code, DtqError

log = logging.getLogger(__name__)
DOMAIN = "dtq"
Req = TypeVar("Req")
Resp = TypeVar("Resp")

GRPC_CODE = {
    Code.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    Code.NOT_FOUND: code_pb2.NOT_FOUND,
    Code.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    Code.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    Code.UNAVAILABLE: code_pb2.UNAVAILABLE,
    Code.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    Code.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
}


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_of(error: DtqError) -> status_pb2.Status:
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))]
    if error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(error.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=GRPC_CODE[error.code], message=error.message, details=details)


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def grpc_status(error: DtqError) -> grpc.Status:
    """The status to abort with: the rich status, and `retry-after` when it applies."""
    status: grpc.Status = rpc_status.to_status(status_of(error))
    if error.retry_after is None:
        return status
    after = str(max(1, math.ceil(error.retry_after)))
    return _Status(status.code, status.details, (*status.trailing_metadata, ("retry-after", after)))


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: DtqError) -> None:
    await context.abort_with_status(grpc_status(error))


_series: dict[tuple[str, str], tuple[Any, Any]] = {}  # (method, code) -> (counter, histogram)


def _record(method: str, code: str, start: float) -> None:
    key = (method, code)
    if (pair := _series.get(key)) is None:
        pair = _series[key] = (
            metrics.grpc_requests.labels(method, code),
            metrics.grpc_latency.labels(method, code),
        )
    pair[0].inc()
    pair[1].observe(time.perf_counter() - start)


Unary = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def unary(fn: Unary[Req, Resp]) -> Unary[Req, Resp]:
    """Wrap a unary handler: map errors, record metrics."""
    method = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        start, code = time.perf_counter(), "OK"
        try:
            return await fn(self, request, context)
        except DtqError as error:
            code = error.code.value
            await abort(context, error)
            raise  # unreachable: abort raises
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            code = "ABORTED"
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("rpc_failed", extra={"method": method})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
            raise
        finally:
            _record(method, code, start)

    return wrapper


Streaming = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Resp]]


def streaming(fn: Streaming[Req, Resp]) -> Streaming[Req, Resp]:
    """Wrap a response-streaming handler: map errors, record metrics."""
    method = fn.__name__

    @functools.wraps(fn)
    async def wrapper(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Resp]:
        start, code = time.perf_counter(), "OK"
        try:
            async for item in fn(self, request, context):
                yield item
        except DtqError as error:
            code = error.code.value
            await abort(context, error)
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            code = "ABORTED"
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("rpc_failed", extra={"method": method})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        finally:
            _record(method, code, start)

    return wrapper
