"""A task's attempt history: the log, then the latest attempt from the row;
its protobuf form; the ListTasks filters of time and idempotency key."""

from __future__ import annotations

import time
import uuid

import pytest
from google.protobuf import timestamp_pb2

from dtq.api import convert
from dtq.domain import attempts, ids
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import Attempt, TaskError, TaskState
from dtq.v1 import task_service_pb2
from tests.unit.test_convert import a_task

S = TaskState
BOOM = TaskError("boom", "ValueError", "Traceback ...")
LOGGED = (Attempt(1, "w-0", 10.0, 11.0, BOOM),)


def test_a_running_task_adds_its_current_attempt_to_the_log() -> None:
    task = a_task(attempt_log=LOGGED)  # attempts 2, running on w-1
    history = attempts.history(task)
    assert history[0] == LOGGED[0]
    assert history[1] == Attempt(2, "w-1", task.started_at, None, None)


@pytest.mark.parametrize("state", [S.COMPLETED, S.CANCELLED])
def test_a_finished_attempt_ends_when_the_task_did(state: TaskState) -> None:
    task = a_task(state=state, finished_at=1_700_000_009.0, attempt_log=LOGGED, error=BOOM)
    assert attempts.history(task)[-1] == Attempt(2, "w-1", task.started_at, 1_700_000_009.0)


def test_a_logged_last_attempt_is_not_repeated() -> None:
    task = a_task(state=S.DEAD_LETTERED, attempts=1, attempt_log=LOGGED, error=BOOM)
    assert attempts.history(task) == list(LOGGED)


def test_a_row_from_before_the_log_shows_its_last_attempt_with_its_error() -> None:
    task = a_task(state=S.DEAD_LETTERED, attempt_log=(), error=BOOM, finished_at=12.0)
    assert attempts.history(task) == [Attempt(2, "w-1", task.started_at, 12.0, BOOM)]


def test_a_task_never_started_has_no_attempts() -> None:
    assert attempts.history(a_task(state=S.PENDING, attempts=0, started_at=None)) == []


def test_history_goes_out_in_the_full_view_of_a_read_log_only() -> None:
    task = a_task(attempt_log=LOGGED)
    full = convert.task(task)
    assert [a.attempt for a in full.attempt_history] == [1, 2]
    first, current = full.attempt_history
    assert (first.worker_id, first.error.type, first.error.message) == ("w-0", "ValueError", "boom")
    assert convert.seconds_of(first.ended_at) == 11.0
    assert not current.HasField("ended_at") and not current.HasField("error")
    assert not convert.task(task, full=False).attempt_history
    assert not convert.task(a_task()).attempt_history  # the log was not read


def at(seconds: float) -> timestamp_pb2.Timestamp:
    return convert.timestamp(seconds)


def test_task_filter_of_a_time_range_and_a_key() -> None:
    req = task_service_pb2.ListTasksRequest(
        created_after=at(100.5), created_before=at(200.0), idempotency_key="order-1"
    )
    f = convert.task_filter(req)
    assert (f.created_after, f.created_before, f.idempotency_key) == (100.5, 200.0, "order-1")
    none = convert.task_filter(task_service_pb2.ListTasksRequest())
    assert (none.created_after, none.created_before, none.idempotency_key) == (None, None, None)
    with pytest.raises(DtqError) as caught:
        convert.task_filter(task_service_pb2.ListTasksRequest(idempotency_key="k" * 257))
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["idempotency_key"]


def test_the_floor_id_of_a_time_sorts_before_its_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    # Reset the process counter: an earlier test in this process may have made
    # ids of a later (fake) clock, which `uuid7` would keep counting from.
    monkeypatch.setattr(ids, "_last", 0)
    before = time.time()
    made = ids.uuid7()
    assert ids.floor(before - 0.001) <= made < ids.floor(time.time() + 1)
    assert ids.floor(-5) == uuid.UUID(int=0)
