"""Typed exceptions of the client, mapped from a call's gRPC status.

The server answers every expected failure with a `google.rpc.Status` carrying
`ErrorInfo(reason, domain="dtq")`, `BadRequest` field violations for bad input
and `RetryInfo` when retrying later can help (see `dtq/api/errors.py`). Catch by
class and branch on `reason`, never on the message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2, status_pb2

M = TypeVar("M", bound=pb_message.Message)


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (`requests[2].type`) and what is wrong."""

    field: str
    description: str


class DtqClientError(Exception):
    """A call the server (or the connection to it) failed.

    `code` is the gRPC status code, `reason` the machine-readable
    `ErrorInfo.reason` ('' when the failure came from the transport),
    `retry_after` the server's `RetryInfo` delay in seconds, if any.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        violations: tuple[FieldViolation, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            f"{code.name} {reason}: {message}" if reason else f"{code.name}: {message}"
        )
        self.code = code
        self.message = message
        self.reason = reason
        self.violations = violations
        self.retry_after = retry_after


class InvalidArgument(DtqClientError):
    """A field of the request is invalid; `violations` names each one."""


class NotFound(DtqClientError):
    """No task (or queue, worker) has that id."""


class AlreadyExists(DtqClientError):
    """The idempotency key was used before for a different request."""


class FailedPrecondition(DtqClientError):
    """The task is in a state that does not allow this (e.g. cancelling a finished task)."""


class Unavailable(DtqClientError):
    """No server answered, or the server could not reach PostgreSQL or Redis."""


class ResourceExhausted(DtqClientError):
    """A rate limit or quota was hit; retry after `retry_after`."""


class PermissionDenied(DtqClientError):
    """The caller may not do this."""


class Unauthenticated(DtqClientError):
    """The call carried no valid credentials."""


class DeadlineExceeded(DtqClientError, TimeoutError):
    """The call took longer than the client's timeout."""


_BY_CODE: dict[grpc.StatusCode, type[DtqClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def _detail(status: status_pb2.Status | None, kind: type[M]) -> M | None:
    for detail in status.details if status is not None else ():
        if detail.Is(kind.DESCRIPTOR):
            found = kind()
            detail.Unpack(found)
            return found
    return None


def _status(error: grpc.Call | grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The rich status in the trailers (sync and asyncio calls alike)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def from_status(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None
) -> DtqClientError:
    """The typed exception for a status code and its rich details."""
    info = _detail(status, error_details_pb2.ErrorInfo)
    bad = _detail(status, error_details_pb2.BadRequest)
    retry = _detail(status, error_details_pb2.RetryInfo)
    violations = tuple(
        FieldViolation(v.field, v.description) for v in (bad.field_violations if bad else ())
    )
    delay = retry.retry_delay.ToNanoseconds() / 1e9 if retry else None
    kind = _BY_CODE.get(code, DtqClientError)
    return kind(code, message, info.reason if info else "", violations, delay)


def from_rpc_error(error: grpc.RpcError) -> DtqClientError:
    """The typed exception for a failed call (sync or asyncio)."""
    if not isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return DtqClientError(grpc.StatusCode.UNKNOWN, str(error))
    code = error.code() or grpc.StatusCode.UNKNOWN
    return from_status(code, error.details() or "", _status(error))


class TaskFailed(Exception):
    """The task was dead-lettered: every attempt failed, or the error was permanent.

    `error_type`, `message` and `traceback` are the remote handler's.
    """

    def __init__(self, task_id: str, error_type: str, message: str, traceback: str) -> None:
        super().__init__(f"task {task_id} failed: {error_type}: {message}")
        self.task_id = task_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback


class TaskCancelled(Exception):
    """The task was cancelled before it completed."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} was cancelled")
        self.task_id = task_id
