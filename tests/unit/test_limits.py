"""Rates as written on the command line, limit validation, and the errors of
a caller over a limit (code, reason, RetryInfo, retry-after)."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2, status_pb2

from dtq.api.errors import grpc_status
from dtq.domain.errors import Code, DtqError
from dtq.domain.limits import (
    NO_SHARE,
    QUEUED_CAP,
    RATE_LIMITED,
    Share,
    TenantLimits,
    check_tenant_limits,
    default_burst,
    parse_rate,
    queued_cap,
    rate_limited,
)


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("10/s", 10.0), ("10", 10.0), ("600/m", 10.0), ("1.5/min", 0.025), ("36/h", 0.01)],
)
def test_rates_are_written_per_unit(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["", "fast", "10/d", "-1/s", "0/s", "1/s/s"])
def test_what_is_not_a_rate(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_the_default_burst_is_one_seconds_worth() -> None:
    assert [default_burst(r) for r in (0.1, 1.0, 2.5, 100.0)] == [1, 1, 3, 100]
    assert TenantLimits("t", submit_rate=0.5).burst == 1
    assert TenantLimits("t", submit_rate=50, submit_burst=7).burst == 7


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (TenantLimits("t", submit_rate=0.0), "submit_rate"),
        (TenantLimits("t", submit_rate=float("nan")), "submit_rate"),
        (TenantLimits("t", submit_burst=5), "submit_burst"),
        (TenantLimits("t", submit_rate=1, submit_burst=0), "submit_burst"),
        (TenantLimits("t", max_queued=-1), "max_queued"),
        (TenantLimits("t", max_running=0), "max_running"),
        (TenantLimits("t", key_max_running=1_000_001), "key_max_running"),
        (TenantLimits("t", key_weights={"a": 0}), "key_weights['a']"),
        (TenantLimits("t", key_weights={str(i): 2 for i in range(101)}), "key_weights"),
    ],
)
def test_bad_limits_name_their_field(limits: TenantLimits, field: str) -> None:
    with pytest.raises(DtqError) as caught:
        check_tenant_limits(limits)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert caught.value.violations[0].field == field


def test_the_share_names_only_keys_that_weigh_more_than_one() -> None:
    limits = TenantLimits("t", max_running=4, key_weights={"b": 2, "a": 1, "c": 5})
    assert Share.of(limits) == Share(4, 0, (("b", 2), ("c", 5)))
    assert Share.of(None) == NO_SHARE == Share.of(TenantLimits("t"))


def test_no_limits_at_all_is_fine() -> None:
    check_tenant_limits(TenantLimits("t"))
    check_tenant_limits(TenantLimits("t", max_queued=0))


def _details(error: DtqError) -> tuple[status_pb2.Status, dict[str, str]]:
    status = grpc_status(error)
    metadata = dict(status.trailing_metadata)
    return status_pb2.Status.FromString(metadata.pop("grpc-status-details-bin")), metadata


@pytest.mark.parametrize(
    ("error", "reason", "header"),
    [
        (rate_limited("acme", 10, 0.25), RATE_LIMITED, "1"),
        (queued_cap("acme", 100, 100, 1.5), QUEUED_CAP, "2"),
    ],
)
def test_over_a_limit_is_resource_exhausted_with_when_to_retry(
    error: DtqError, reason: str, header: str
) -> None:
    status, metadata = _details(error)
    assert status.code == 8  # RESOURCE_EXHAUSTED
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and info.reason == reason
    assert status.details[1].Unpack(retry)
    assert retry.retry_delay.ToNanoseconds() == round(error.retry_after * 1e9)  # type: ignore[operator]
    assert metadata == {"retry-after": header}  # whole seconds, rounded up (HTTP Retry-After)


def test_an_error_without_retry_info_has_no_retry_after() -> None:
    _, metadata = _details(DtqError.invalid("type", "is required"))
    assert metadata == {}
