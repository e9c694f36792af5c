"""Plain, typed views of what the server returns: tasks, their errors, queues.

Protos stop here: the rest of the client and its users see these dataclasses.
JSON numbers arrive as floats (`google.protobuf.Struct` holds doubles): a
handler's `{"n": 1}` reads back as `{"n": 1.0}`, which compares equal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from dtq.client.errors import TaskCancelled, TaskFailed
from dtq.v1 import queue_pb2, task_pb2


class TaskState(enum.StrEnum):
    """Where a task is in its life (COMPLETED, CANCELLED, DEAD_LETTERED are final)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # an attempt failed; another one is scheduled
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead_lettered"
    WAITING = "waiting"  # a flow's step: waits for its parent or its group
    UNSPECIFIED = "unspecified"  # a state this client does not know

    @property
    def terminal(self) -> bool:
        """True for a state the task leaves only by an operator's retry."""
        return self in (TaskState.COMPLETED, TaskState.CANCELLED, TaskState.DEAD_LETTERED)


PRIORITIES = ("low", "medium", "high")


@dataclass(frozen=True)
class TaskErrorInfo:
    """Why the latest attempt failed, as the worker reported it."""

    type: str
    message: str
    traceback: str
    permanent: bool


@dataclass(frozen=True)
class TaskInfo:
    """A snapshot of one task. `payload` and `result` are None in a BASIC listing."""

    id: str
    type: str
    queue: str
    state: TaskState
    priority: str
    attempts: int
    max_retries: int
    payload: dict[str, Any] | None
    result: Any
    error: TaskErrorInfo | None
    worker_id: str
    idempotency_key: str
    created_at: datetime | None
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    fairness_key: str = ""
    # Flows: the task this one waits for (a chain) or that submitted it (a
    # child task); the group it belongs to (or, for a group's callback, the
    # group it waits for).
    parent_id: str = ""
    group_id: str = ""
    # The first task of its tree ("" for a top-level task): of a chain, its
    # first step; of a child task (`ctx.submit`), its top-level ancestor.
    root_id: str = ""


def _time(task: task_pb2.Task, name: str) -> datetime | None:
    if not task.HasField(name):  # type: ignore[arg-type]
        return None
    stamp: timestamp_pb2.Timestamp = getattr(task, name)
    return stamp.ToDatetime(tzinfo=UTC)


def _state(value: int) -> TaskState:
    name = task_pb2.Task.State.Name(value).removeprefix("STATE_").lower()  # type: ignore[arg-type]
    try:
        return TaskState(name)
    except ValueError:
        return TaskState.UNSPECIFIED


def _priority(value: int) -> str:
    return PRIORITIES[value - 1] if 1 <= value <= 3 else "medium"


def task_info(task: task_pb2.Task) -> TaskInfo:
    """The dataclass view of a task message."""
    e = task.last_error
    error = TaskErrorInfo(e.type, e.message, e.traceback, e.permanent) if e.type else None
    payload = json_format.MessageToDict(task.payload) if task.HasField("payload") else None
    result = json_format.MessageToDict(task.result) if task.HasField("result") else None
    return TaskInfo(
        id=task.id,
        type=task.type,
        queue=task.queue,
        state=_state(task.state),
        priority=_priority(task.priority),
        attempts=task.attempts,
        max_retries=task.max_retries,
        payload=payload,
        result=result,
        error=error,
        worker_id=task.worker_id,
        idempotency_key=task.idempotency_key,
        created_at=_time(task, "created_at"),
        scheduled_at=_time(task, "scheduled_at"),
        started_at=_time(task, "started_at"),
        finished_at=_time(task, "finished_at"),
        fairness_key=task.fairness_key,
        # getattr: messages of protos older than flows have no such fields.
        parent_id=getattr(task, "parent_id", ""),
        group_id=getattr(task, "group_id", "") or getattr(task, "callback_of", ""),
        root_id=getattr(task, "root_id", ""),
    )


def outcome(task: TaskInfo) -> Any:
    """The result of a finished task, or the exception that says why there is none."""
    if task.state is TaskState.CANCELLED:
        raise TaskCancelled(task.id)
    if task.state is TaskState.DEAD_LETTERED:
        e = task.error or TaskErrorInfo("", "no error was recorded", "", False)
        raise TaskFailed(task.id, e.type, e.message, e.traceback)
    if task.state is not TaskState.COMPLETED:
        raise ValueError(f"task {task.id} has not finished: {task.state}")
    return task.result


@dataclass(frozen=True)
class QueueStats:
    """The state of one queue: counts by state, recent throughput, paused or not."""

    queue: str
    pending: int
    pending_by_priority: dict[str, int]
    running: int
    scheduled: int
    retrying: int
    dead_lettered: int
    completed_last_minute: int
    failed_last_minute: int
    throughput_per_second: float
    oldest_pending_age: float  # seconds
    paused: bool


def queue_stats(s: queue_pb2.QueueStats) -> QueueStats:
    """The dataclass view of a queue's stats message."""
    p = s.pending_by_priority
    return QueueStats(
        queue=s.queue,
        pending=s.pending,
        pending_by_priority={"high": p.high, "medium": p.medium, "low": p.low},
        running=s.running,
        scheduled=s.scheduled,
        retrying=s.retrying,
        dead_lettered=s.dead_lettered,
        completed_last_minute=s.completed_last_minute,
        failed_last_minute=s.failed_last_minute,
        throughput_per_second=s.throughput_per_second,
        oldest_pending_age=s.oldest_pending_age.ToNanoseconds() / 1e9,
        paused=s.paused,
    )
