"""What a submission may contain and the defaults it gets (dtq/domain/validation.py)."""

from __future__ import annotations

import dataclasses

import pytest

from dtq.domain import validation
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import Priority
from dtq.domain.validation import Limits, SubmitSpec, new_task
from tests.support.ids import time_of

# In the past: ids made for a future `now` would run ahead of the clock for the whole process.
NOW = 1_700_000_000.0
LIMITS = Limits(max_payload_bytes=2048, default_max_retries=3, default_timeout=300.0)


def spec(**fields: object) -> SubmitSpec:
    return SubmitSpec(**{"type": "email.send", "payload": b"{}", **fields})  # type: ignore[arg-type]


def invalid(field: str, reason: str = "INVALID_FIELD", **fields: object) -> None:
    """Assert that `spec(**fields)` is refused on `field`."""
    with pytest.raises(DtqError) as caught:
        new_task(spec(**fields), LIMITS, NOW)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert caught.value.reason == reason
    assert [v.field for v in caught.value.violations] == [field]


def test_defaults() -> None:
    task = new_task(spec(), LIMITS, NOW)
    assert task.queue == "default"
    assert task.priority == Priority.MEDIUM
    assert task.max_retries == 3
    assert task.timeout == 300.0
    assert task.lease_duration == 30.0
    assert task.scheduled_at is None
    assert task.idempotency_key is None
    assert task.id.version == 7
    assert time_of(task.id) >= NOW


def test_values_given_are_kept() -> None:
    task = new_task(
        spec(
            queue="emails",
            priority=3,
            max_retries=0,
            timeout=5.5,
            lease_duration=2.0,
            scheduled_at=NOW + 60,
            idempotency_key="order-42",
        ),
        LIMITS,
        NOW,
    )
    assert (task.queue, task.priority, task.max_retries) == ("emails", Priority.HIGH, 0)
    assert (task.timeout, task.lease_duration) == (5.5, 2.0)
    assert task.scheduled_at == NOW + 60
    assert task.idempotency_key == "order-42"


@pytest.mark.parametrize("value", ["a", "A9", "email.send", "a_b-c.d", "x" * 128])
def test_type_accepted(value: str) -> None:
    assert new_task(spec(type=value), LIMITS, NOW).type == value


@pytest.mark.parametrize("value", ["", "9lives", "_x", "a b", "a/b", "é", "x" * 129])
def test_type_refused(value: str) -> None:
    invalid("type", type=value)


@pytest.mark.parametrize("value", ["q", "9", "emails-eu_1", "x" * 64])
def test_queue_accepted(value: str) -> None:
    assert new_task(spec(queue=value), LIMITS, NOW).queue == value


@pytest.mark.parametrize("value", ["-q", "_q", "a.b", "a:b", "{q}", "x" * 65])
def test_queue_refused(value: str) -> None:
    invalid("queue", queue=value)


@pytest.mark.parametrize(("value", "expected"), [(0, Priority.MEDIUM), (1, Priority.LOW)])
def test_priority_zero_means_medium(value: int, expected: Priority) -> None:
    assert new_task(spec(priority=value), LIMITS, NOW).priority == expected


@pytest.mark.parametrize("value", [-1, 4, 99])
def test_priority_refused(value: int) -> None:
    invalid("priority", priority=value)


@pytest.mark.parametrize("value", [0, 1, 100])
def test_max_retries_accepted(value: int) -> None:
    assert new_task(spec(max_retries=value), LIMITS, NOW).max_retries == value


@pytest.mark.parametrize("value", [-1, 101])
def test_max_retries_refused(value: int) -> None:
    invalid("max_retries", max_retries=value)


@pytest.mark.parametrize(
    ("name", "lo", "hi"), [("timeout", 1.0, 86400.0), ("lease_duration", 1.0, 3600.0)]
)
def test_time_bounds(name: str, lo: float, hi: float) -> None:
    for value in (lo, hi):
        assert getattr(new_task(spec(**{name: value}), LIMITS, NOW), name) == value
    for value in (lo - 0.001, hi + 0.001, 0.0, -1.0):
        invalid(name, **{name: value})


def test_payload_at_the_limit_is_accepted() -> None:
    assert len(new_task(spec(payload=b"x" * 2048), LIMITS, NOW).payload) == 2048


def test_payload_over_the_limit_is_too_large() -> None:
    invalid("payload", reason="PAYLOAD_TOO_LARGE", payload=b"x" * 2049)


def test_idempotency_key_length() -> None:
    assert new_task(spec(idempotency_key="k" * 256), LIMITS, NOW).idempotency_key == "k" * 256
    invalid("idempotency_key", idempotency_key="k" * 257)


@pytest.mark.parametrize("when", [NOW - 3600, NOW, 0.0])
def test_scheduled_at_not_in_the_future_runs_now(when: float) -> None:
    assert new_task(spec(scheduled_at=when), LIMITS, NOW).scheduled_at is None


def test_scheduled_at_in_the_future_is_kept() -> None:
    assert new_task(spec(scheduled_at=NOW + 0.5), LIMITS, NOW).scheduled_at == NOW + 0.5


# -- request hash ----------------------------------------------------------------

FULL = spec(
    queue="emails",
    priority=3,
    max_retries=2,
    timeout=10.0,
    lease_duration=5.0,
    scheduled_at=NOW + 60,
    idempotency_key="k",
)
CHANGES = {
    "type": "email.other",
    "payload": b'{"a":1}',
    "queue": "other",
    "priority": 1,
    "max_retries": 3,
    "timeout": 11.0,
    "lease_duration": 6.0,
    "scheduled_at": NOW + 61,
}


def request_hash(s: SubmitSpec) -> bytes:
    return new_task(s, LIMITS, NOW).request_hash


def test_request_hash_is_equal_for_equal_specs() -> None:
    first, second = new_task(FULL, LIMITS, NOW), new_task(FULL, LIMITS, NOW)
    assert first.id != second.id
    assert first.request_hash == second.request_hash
    assert len(first.request_hash) == 16


def test_request_hash_is_equal_for_spelled_out_defaults() -> None:
    explicit = spec(queue="default", priority=2, max_retries=3, timeout=300.0, lease_duration=30.0)
    assert request_hash(spec()) == request_hash(explicit)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_request_hash_differs_when_a_field_differs(field: str) -> None:
    changed = dataclasses.replace(FULL, **{field: CHANGES[field]})
    assert request_hash(changed) != request_hash(FULL)


def test_request_hash_ignores_the_idempotency_key_itself() -> None:
    assert request_hash(dataclasses.replace(FULL, idempotency_key="other")) == request_hash(FULL)


# -- other limits ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 50), (1, 1), (50, 50), (1000, 1000), (5000, 1000)]
)
def test_page_size(value: int, expected: int) -> None:
    assert validation.page_size(value, default=50) == expected


def test_negative_page_size_is_refused() -> None:
    with pytest.raises(DtqError) as caught:
        validation.page_size(-1, default=50)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_size"]


@pytest.mark.parametrize("count", [1, 1000])
def test_batch_size_accepted(count: int) -> None:
    validation.batch_size(count)


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_refused(count: int) -> None:
    with pytest.raises(DtqError) as caught:
        validation.batch_size(count)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["requests"]


@pytest.mark.parametrize("value", ["w", "host-1:1234", "a.b_c", "x" * 128])
def test_worker_id_accepted(value: str) -> None:
    assert validation.worker_id(value) == value


@pytest.mark.parametrize("value", ["", ":w", "a b", "x" * 129])
def test_worker_id_refused(value: str) -> None:
    with pytest.raises(DtqError) as caught:
        validation.worker_id(value, "open.worker_id")
    assert [v.field for v in caught.value.violations] == ["open.worker_id"]


def test_batch_item_errors_are_prefixed() -> None:
    with pytest.raises(DtqError) as caught:
        new_task(spec(type=""), LIMITS, NOW)
    prefixed = caught.value.prefixed("requests[2]")
    assert prefixed.code == Code.INVALID_ARGUMENT
    assert prefixed.reason == caught.value.reason
    assert [v.field for v in prefixed.violations] == ["requests[2].type"]


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_trace_context_is_kept_and_empty_is_none() -> None:
    fields = {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}
    assert new_task(spec(trace_context=fields), LIMITS, NOW).trace_context == fields
    assert new_task(spec(trace_context={}), LIMITS, NOW).trace_context is None


def test_trace_context_does_not_change_what_makes_a_submission_idempotent() -> None:
    traced = new_task(spec(trace_context={"traceparent": TRACEPARENT}), LIMITS, NOW)
    assert traced.request_hash == new_task(spec(), LIMITS, NOW).request_hash


@pytest.mark.parametrize(
    "fields",
    [
        {"TraceParent": TRACEPARENT},  # keys are lowercase, as propagators write them
        {"": "x"},
        {"k" * 65: "x"},
        {f"k{i}": "x" for i in range(17)},
        {"tracestate": "x" * 5000},
    ],
)
def test_trace_context_limits(fields: dict[str, str]) -> None:
    invalid("trace_context", trace_context=fields)


# -- values PostgreSQL cannot store (issue 10: one bad submit failed its group) --


@pytest.mark.parametrize("key", ["a\x00b", "\x00", "key\n", "k\x7f", "k\x85"])
def test_idempotency_key_with_control_characters_is_refused(key: str) -> None:
    invalid("idempotency_key", idempotency_key=key)


def test_trace_context_value_with_nul_is_refused() -> None:
    invalid("trace_context.traceparent", trace_context={"traceparent": "00-\x00-01"})


@pytest.mark.parametrize("key", ["tracepar\x00ent", "traceparent\n"])
def test_trace_context_key_with_control_characters_is_refused(key: str) -> None:
    invalid("trace_context", trace_context={key: "00-abc-01"})


@pytest.mark.parametrize(
    "when", [253_402_300_800.0, 253_402_300_800.0 + 86400 * 365, 1e20, float("inf"), float("nan")]
)
def test_scheduled_at_past_year_9999_is_refused(when: float) -> None:
    invalid("scheduled_at", scheduled_at=when)  # 253402300800 = 10000-01-01T00:00:00Z


def test_scheduled_at_at_the_end_of_year_9999_is_kept() -> None:
    last = 253_402_300_799.5
    assert new_task(spec(scheduled_at=last), LIMITS, NOW).scheduled_at == last


def test_scheduled_at_before_year_1_is_refused() -> None:
    invalid("scheduled_at", scheduled_at=-62_135_596_801.0)


def test_unicode_text_without_control_characters_is_kept() -> None:
    task = new_task(
        spec(idempotency_key="clé-✓ 1", trace_context={"tracestate": "v=ü"}), LIMITS, NOW
    )
    assert task.idempotency_key == "clé-✓ 1"
