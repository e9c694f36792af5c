"""The one mapping from domain errors to google.rpc.Status (dtq/api/errors.py)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from dtq.api.errors import status_of
from dtq.domain.errors import STALE_LEASE, Code, DtqError, Violation


def details(status: status_pb2.Status) -> dict[str, any_pb2.Any]:
    """The status's details by message name (one of each kind at most)."""
    by_name = {d.TypeName().rsplit(".", 1)[-1]: d for d in status.details}
    assert len(by_name) == len(status.details)
    return by_name


def unpacked(status: status_pb2.Status, kind: type) -> object:
    message = kind()
    assert details(status)[kind.DESCRIPTOR.name].Unpack(message)
    return message


@pytest.mark.parametrize("code", list(Code))
def test_every_code_maps_to_the_grpc_code_of_that_name(code: Code) -> None:
    status = status_of(DtqError(code, "SOME_REASON", "m"))
    assert status.code == code_pb2.Code.Value(code.value)
    assert grpc.StatusCode[code.value].value[0] == status.code


def test_error_info_carries_reason_and_domain() -> None:
    status = status_of(DtqError.failed_precondition(STALE_LEASE, "m"))
    info = unpacked(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("STALE_LEASE", "dtq")
    assert set(details(status)) == {"ErrorInfo"}


def test_validation_error_has_field_violations() -> None:
    error = DtqError.invalid("payload", "too big", reason="PAYLOAD_TOO_LARGE")
    status = status_of(error.prefixed("requests[1]"))
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert unpacked(status, error_details_pb2.ErrorInfo).reason == "PAYLOAD_TOO_LARGE"
    bad = unpacked(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["requests[1].payload"]
    assert [v.description for v in bad.field_violations] == ["too big"]


def test_several_violations_keep_their_order() -> None:
    error = DtqError(
        Code.INVALID_ARGUMENT, "INVALID_FIELD", "m", [Violation("a", "x"), Violation("b", "y")]
    )
    bad = unpacked(status_of(error), error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["a", "b"]


@pytest.mark.parametrize(("after", "seconds", "nanos"), [(1.0, 1, 0), (0.25, 0, 250_000_000)])
def test_unavailable_has_retry_info(after: float, seconds: int, nanos: int) -> None:
    status = status_of(DtqError.unavailable("redis", "down", retry_after=after))
    assert status.code == code_pb2.UNAVAILABLE
    assert unpacked(status, error_details_pb2.ErrorInfo).reason == "REDIS_UNAVAILABLE"
    delay = unpacked(status, error_details_pb2.RetryInfo).retry_delay
    assert (delay.seconds, delay.nanos) == (seconds, nanos)


def test_resource_exhausted_with_retry_after() -> None:
    error = DtqError(Code.RESOURCE_EXHAUSTED, "RATE_LIMITED", "m", retry_after=2.0)
    status = status_of(error)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    assert unpacked(status, error_details_pb2.RetryInfo).retry_delay.seconds == 2


def test_not_found_reason_names_the_resource() -> None:
    status = status_of(DtqError.not_found("task", "x"))
    assert status.code == code_pb2.NOT_FOUND
    assert unpacked(status, error_details_pb2.ErrorInfo).reason == "TASK_NOT_FOUND"
    assert set(details(status)) == {"ErrorInfo"}


def test_status_survives_the_grpc_trailer_encoding() -> None:
    status = status_of(DtqError(Code.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED", "m"))
    grpc_status = rpc_status.to_status(status)
    assert grpc_status.code == grpc.StatusCode.ALREADY_EXISTS
    trailer = dict(grpc_status.trailing_metadata)["grpc-status-details-bin"]
    assert status_pb2.Status.FromString(trailer) == status
