"""Status -> typed exception, retry decisions, task outcomes and task views."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format

from dtq.api.errors import status_of
from dtq.client import (
    DeadlineExceeded,
    DtqClientError,
    InvalidArgument,
    NotFound,
    RetryPolicy,
    TaskCancelled,
    TaskFailed,
    TaskState,
    Unavailable,
)
from dtq.client.errors import ResourceExhausted, from_status
from dtq.client.models import outcome, task_info
from dtq.client.retry import UNSENT, Deadline
from dtq.domain.errors import Code, DtqError
from dtq.v1 import task_pb2


def typed(error: DtqError, code: grpc.StatusCode) -> DtqClientError:
    return from_status(code, error.message, status_of(error))


def test_invalid_argument_carries_reason_and_violations() -> None:
    e = typed(DtqError.invalid("requests[2].type", "bad name"), grpc.StatusCode.INVALID_ARGUMENT)
    assert isinstance(e, InvalidArgument)
    assert e.reason == "INVALID_FIELD"
    assert [(v.field, v.description) for v in e.violations] == [("requests[2].type", "bad name")]


def test_retry_info_and_codes() -> None:
    e = typed(DtqError.unavailable("redis", "down", retry_after=1.5), grpc.StatusCode.UNAVAILABLE)
    assert isinstance(e, Unavailable) and e.retry_after == 1.5
    assert isinstance(typed(DtqError.not_found("task", "x"), grpc.StatusCode.NOT_FOUND), NotFound)
    plain = from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "slow", None)
    assert isinstance(plain, DeadlineExceeded) and isinstance(plain, TimeoutError)
    assert (plain.reason, plain.violations, plain.retry_after) == ("", (), None)
    assert type(from_status(grpc.StatusCode.INTERNAL, "x", None)) is DtqClientError


def test_retry_policy_backs_off_boundedly_and_honours_retry_info() -> None:
    policy = RetryPolicy(attempts=4, initial=0.1, maximum=0.3)
    transient = from_status(grpc.StatusCode.UNAVAILABLE, "", None)
    delays = [policy.delay(transient, n) for n in range(4)]
    assert delays[3] is None  # the fourth try was the last
    assert all(d is not None and 0.05 <= d <= 0.3 for d in delays[:3])
    told = typed(DtqError.unavailable("pg", "x", retry_after=2.0), grpc.StatusCode.UNAVAILABLE)
    assert policy.delay(told, 0) == 2.0
    bad = from_status(grpc.StatusCode.INVALID_ARGUMENT, "", None)
    assert policy.delay(bad, 0) is None
    slow = from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "", None)
    assert policy.delay(slow, 0) is not None and policy.delay(slow, 0, UNSENT) is None
    too_big = from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "message larger than max", None)
    assert policy.delay(too_big, 0) is None
    limited = typed(
        DtqError(Code.RESOURCE_EXHAUSTED, "RATE_LIMITED", "slow down", retry_after=0.5),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert policy.delay(limited, 0) == 0.5
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_deadline() -> None:
    assert Deadline(None).remaining() is None and not Deadline(None).expired()
    assert Deadline(0).expired() and Deadline(10).capped(99) <= 10


def task(state: str, **fields: object) -> task_pb2.Task:
    msg = task_pb2.Task(id="t", type="x", state=task_pb2.Task.State.Value(state))
    return json_format.ParseDict(fields, msg)


def test_outcomes() -> None:
    done = task_info(task("STATE_COMPLETED", result={"n": 1}, priority="PRIORITY_HIGH"))
    assert (outcome(done), done.priority, done.state.terminal) == ({"n": 1}, "high", True)
    assert outcome(task_info(task("STATE_COMPLETED"))) is None
    with pytest.raises(TaskCancelled):
        outcome(task_info(task("STATE_CANCELLED")))
    error = {"type": "KeyError", "message": "'to'", "traceback": "Traceback ..."}
    with pytest.raises(TaskFailed) as caught:
        outcome(task_info(task("STATE_DEAD_LETTERED", last_error=error)))
    assert (caught.value.error_type, caught.value.traceback) == ("KeyError", "Traceback ...")
    running = task_info(task("STATE_RUNNING", created_at="2030-01-01T00:00:00Z"))
    assert running.state is TaskState.RUNNING and not running.state.terminal
    assert running.created_at is not None and running.created_at.year == 2030
    with pytest.raises(ValueError):
        outcome(running)


def test_a_policy_limited_to_some_codes_tells_of_each_wait() -> None:
    told: list[tuple[str, float]] = []
    policy = RetryPolicy(
        attempts=3,
        only=frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED}),
        on_retry=lambda error, seconds: told.append((error.reason, seconds)),
    )
    limited = ResourceExhausted(grpc.StatusCode.RESOURCE_EXHAUSTED, "", "RATE_LIMITED", (), 0.25)
    down = Unavailable(grpc.StatusCode.UNAVAILABLE, "", "REDIS_UNAVAILABLE", (), 1.0)
    assert policy.delay(limited, 0) == 0.25
    assert policy.delay(down, 0) is None  # not one of `only`
    assert policy.delay(limited, 2) is None  # the tries are spent
    policy.waiting(limited, 0.25)
    assert told == [("RATE_LIMITED", 0.25)]
