"""Converters between protos and the domain (dtq/api/convert.py)."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from dtq.api import convert
from dtq.domain.errors import Code, DtqError
from dtq.domain.ids import uuid7
from dtq.domain.model import Priority, Task, TaskError, TaskState
from dtq.v1 import task_pb2, task_service_pb2, worker_service_pb2

TOKEN = "0123456789abcdef0123456789abcdef"


def struct(**fields: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


def a_task(**changes: object) -> Task:
    fields: dict[str, object] = {
        "id": uuid7(),
        "type": "email.send",
        "queue": "emails",
        "priority": Priority.HIGH,
        "state": TaskState.RUNNING,
        "attempts": 2,
        "max_retries": 5,
        "timeout": 12.5,
        "lease_duration": 30.0,
        "created_at": 1_700_000_000.123456,
        "updated_at": 1_700_000_001.5,
        "payload": struct(to="a@b.c", n=3, tags=["x", "y"]).SerializeToString(deterministic=True),
        "started_at": 1_700_000_001.25,
        "worker_id": "w-1",
        "idempotency_key": "k",
    }
    fields.update(changes)
    return Task(**fields)  # type: ignore[arg-type]


def test_task_times_roundtrip_to_the_microsecond() -> None:
    t = a_task(scheduled_at=1_700_000_100.000001, finished_at=1_700_000_002.999999)
    msg = convert.task(t)
    for name in ("created_at", "updated_at", "scheduled_at", "started_at", "finished_at"):
        assert convert.seconds_of(getattr(msg, name)) == pytest.approx(getattr(t, name), abs=1e-6)
    assert convert.seconds_of(msg.timeout) == 12.5
    assert convert.seconds_of(msg.lease_duration) == 30.0


def test_unset_times_stay_unset() -> None:
    msg = convert.task(a_task(started_at=None))
    for name in ("scheduled_at", "started_at", "finished_at"):
        assert not msg.HasField(name)


def test_task_scalars_and_enums() -> None:
    t = a_task()
    msg = convert.task(t)
    assert uuid.UUID(msg.id) == t.id
    assert (msg.type, msg.queue, msg.worker_id, msg.idempotency_key) == (
        "email.send",
        "emails",
        "w-1",
        "k",
    )
    assert msg.priority == task_pb2.PRIORITY_HIGH
    assert msg.state == task_pb2.Task.STATE_RUNNING
    assert (msg.attempts, msg.max_retries) == (2, 5)


@pytest.mark.parametrize("state", list(TaskState))
def test_every_state_maps_both_ways(state: TaskState) -> None:
    pb = convert.task(a_task(state=state)).state
    assert pb != task_pb2.Task.STATE_UNSPECIFIED
    assert convert.STATE_FROM_PB[pb] == state
    assert task_pb2.Task.State.Name(pb) == f"STATE_{state.name}"


@pytest.mark.parametrize("priority", list(Priority))
def test_every_priority_maps_to_the_enum_of_that_name(priority: Priority) -> None:
    pb = convert.task(a_task(priority=priority)).priority
    assert task_pb2.Priority.Name(pb) == f"PRIORITY_{priority.name}"


def test_payload_and_result_roundtrip() -> None:
    result = struct(ok=True).fields["ok"].SerializeToString()
    msg = convert.task(a_task(result=result))
    assert msg.payload == struct(to="a@b.c", n=3, tags=["x", "y"])
    assert msg.result.bool_value is True


def test_basic_view_leaves_out_payload_and_result() -> None:
    msg = convert.task(a_task(result=b""), full=False)
    assert not msg.HasField("payload")
    assert not msg.HasField("result")


def test_last_error() -> None:
    msg = convert.task(a_task(error=TaskError("boom", "ValueError", "tb", permanent=True)))
    e = msg.last_error
    assert (e.message, e.type, e.traceback, e.permanent) == ("boom", "ValueError", "tb", True)
    assert not convert.task(a_task()).HasField("last_error")


def test_empty_optional_strings() -> None:
    msg = convert.task(a_task(worker_id=None, idempotency_key=None))
    assert (msg.worker_id, msg.idempotency_key) == ("", "")


# -- submit requests -----------------------------------------------------------------


def test_submit_spec_with_nothing_optional_set() -> None:
    spec = convert.submit_spec(task_service_pb2.SubmitTaskRequest(type="t"))
    assert spec.type == "t"
    assert spec.payload == b""
    assert (spec.priority, spec.queue, spec.idempotency_key) == (0, "", "")
    assert spec.max_retries is None
    assert spec.timeout is None
    assert spec.lease_duration is None
    assert spec.scheduled_at is None


def test_submit_spec_max_retries_zero_is_not_unset() -> None:
    spec = convert.submit_spec(task_service_pb2.SubmitTaskRequest(type="t", max_retries=0))
    assert spec.max_retries == 0


def test_submit_spec_with_every_field() -> None:
    req = task_service_pb2.SubmitTaskRequest(
        type="t",
        payload=struct(b=2, a=1),
        priority=task_pb2.PRIORITY_LOW,
        queue="q",
        max_retries=7,
        timeout=duration_pb2.Duration(seconds=90, nanos=500_000_000),
        scheduled_at=timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=250_000_000),
        idempotency_key="key",
        lease_duration=duration_pb2.Duration(seconds=15),
    )
    spec = convert.submit_spec(req)
    assert (spec.priority, spec.queue, spec.max_retries, spec.idempotency_key) == (1, "q", 7, "key")
    assert (spec.timeout, spec.lease_duration) == (90.5, 15.0)
    assert spec.scheduled_at == 1_800_000_000.25
    assert struct_pb2.Struct.FromString(spec.payload) == struct(a=1, b=2)


def test_submit_spec_payload_bytes_do_not_depend_on_key_order() -> None:
    one = convert.submit_spec(
        task_service_pb2.SubmitTaskRequest(type="t", payload=struct(a=1, b=2))
    )
    two = convert.submit_spec(
        task_service_pb2.SubmitTaskRequest(type="t", payload=struct(b=2, a=1))
    )
    assert one.payload == two.payload


# -- filters, views, outcomes -----------------------------------------------------------


def test_task_filter_of_known_and_unknown_states() -> None:
    req = task_service_pb2.ListTasksRequest(state=task_pb2.Task.STATE_FAILED, queue="q")
    f = convert.task_filter(req)
    assert (f.state, f.queue, f.type) == (TaskState.FAILED, "q", None)
    with pytest.raises(DtqError) as caught:
        convert.task_filter(task_service_pb2.ListTasksRequest(state=42))  # type: ignore[arg-type]
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["state"]


def test_full_view() -> None:
    assert convert.full_view(task_pb2.TASK_VIEW_UNSPECIFIED, default=True) is True
    assert convert.full_view(task_pb2.TASK_VIEW_BASIC, default=True) is False
    assert convert.full_view(task_pb2.TASK_VIEW_FULL, default=False) is True
    with pytest.raises(DtqError) as caught:
        convert.full_view(9, default=True)
    assert caught.value.code == Code.INVALID_ARGUMENT


def test_outcome_with_a_result() -> None:
    task_id = uuid7()
    msg = worker_service_pb2.TaskOutcome(
        task_id=str(task_id), lease_token=TOKEN, result=struct(x=1).fields["x"]
    )
    out = convert.outcome(msg)
    assert (out.task_id, out.token, out.succeeded) == (task_id, TOKEN, True)
    assert struct_pb2.Value.FromString(out.result or b"").number_value == 1


def test_outcome_with_an_error() -> None:
    msg = worker_service_pb2.TaskOutcome(
        task_id=str(uuid7()),
        lease_token=TOKEN,
        error=task_pb2.TaskError(message="m", type="E", permanent=True),
    )
    out = convert.outcome(msg)
    assert not out.succeeded
    assert out.error == TaskError("m", "E", "", True)


def test_outcome_with_a_bad_token_names_the_field() -> None:
    msg = worker_service_pb2.TaskOutcome(task_id=str(uuid7()), lease_token="nope")
    with pytest.raises(DtqError) as caught:
        convert.outcome(msg, "outcomes[4]")
    assert [v.field for v in caught.value.violations] == ["outcomes[4].lease_token"]


# -- trace context --------------------------------------------------------------------

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_trace_context_goes_out_with_the_task() -> None:
    assert dict(convert.task(a_task(trace_context={"traceparent": PARENT})).trace_context) == {
        "traceparent": PARENT
    }
    assert not convert.task(a_task()).trace_context


def test_submit_spec_trace_context_of_the_request_wins_over_the_servers() -> None:
    own = {"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
    req = task_service_pb2.SubmitTaskRequest(type="t", trace_context={"traceparent": PARENT})
    assert convert.submit_spec(req, own).trace_context == {"traceparent": PARENT}
    plain = task_service_pb2.SubmitTaskRequest(type="t")
    assert convert.submit_spec(plain, own).trace_context == own
    assert convert.submit_spec(plain).trace_context is None


def test_timestamps_and_durations_match_protobuf_s_own_arithmetic() -> None:
    cases = [0.0, 1e-6, 0.5, 1.999999, 1_800_000_000.123456, -1.5, -0.000001, 86_400.25]
    for seconds in cases:
        ts = timestamp_pb2.Timestamp()
        ts.FromMicroseconds(round(seconds * 1e6))
        assert convert.timestamp(seconds) == ts, seconds
        d = duration_pb2.Duration()
        d.FromNanoseconds(round(seconds * 1e9))
        assert convert.duration(seconds) == d, seconds
