"""Building requests from Python values, checked before any network call.

A payload must be a JSON object (a dict with string keys) of JSON values:
anything else raises `TypeError`; NaN, infinities and integers a JSON double
cannot hold exactly raise `ValueError`.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from dtq.client.models import PRIORITIES
from dtq.v1 import task_pb2, task_service_pb2

PriorityName = Literal["low", "medium", "high"]
Seconds = float | timedelta
MAX_EXACT_INT = 2**53  # larger integers lose digits as JSON doubles
MAX_BATCH = 1000  # BatchSubmitTasks' limit


@dataclass(frozen=True)
class Submission:
    """One task to submit: its type, payload and options (see `Client.submit`)."""

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: PriorityName | None = None
    delay: Seconds | None = None
    at: datetime | None = None
    max_retries: int | None = None
    timeout: Seconds | None = None
    lease_duration: Seconds | None = None
    idempotency_key: str | None = None
    unique_for: Seconds | None = None
    unique_key: str | None = None
    unique_states: Iterable[str] | None = None
    fairness_key: str | None = None
    after: str | None = None


def check_json(value: Any, path: str = "payload") -> None:
    """Raise TypeError/ValueError unless `value` is plain JSON."""
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_EXACT_INT:
            raise ValueError(f"{path}: integer {value} does not fit a JSON double exactly")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value} is not a JSON number")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is not a string")
            check_json(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_json(item, f"{path}[{i}]")
    else:
        raise TypeError(f"{path}: {type(value).__name__} is not JSON serializable")


def _float(value: Seconds, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds")
    return seconds


def _seconds(value: Seconds, name: str) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(_float(value, name) * 1e9))
    return out


def _when(s: Submission) -> timestamp_pb2.Timestamp | None:
    if s.delay is not None and s.at is not None:
        raise ValueError("give delay or at, not both")
    if s.at is not None:
        if s.at.tzinfo is None:
            raise ValueError("at must be a timezone-aware datetime")
        when = s.at
    elif s.delay is not None:
        when = datetime.now(UTC) + timedelta(seconds=_float(s.delay, "delay"))
    else:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out


def _unique(s: Submission, request: task_service_pb2.SubmitTaskRequest) -> None:
    if s.unique_for is None:
        if s.unique_key or s.unique_states:
            raise ValueError("unique_key and unique_states need unique_for")
        return
    request.unique_for.CopyFrom(_seconds(s.unique_for, "unique_for"))
    request.unique_key = s.unique_key or ""
    for name in s.unique_states or ():
        try:
            request.unique_states.append(task_pb2.Task.State.Value(f"STATE_{name.upper()}"))
        except ValueError:
            raise ValueError(f"unique_states: unknown state {name!r}") from None


def submit_request(s: Submission) -> task_service_pb2.SubmitTaskRequest:
    """The SubmitTaskRequest for `s`, with a fresh idempotency key if it has none."""
    if not isinstance(s.type, str) or not s.type:
        raise TypeError("task type must be a non-empty string")
    if not isinstance(s.payload, Mapping):
        raise TypeError(f"payload must be a dict, not {type(s.payload).__name__}")
    check_json(s.payload)
    if s.priority is not None and s.priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
    payload = struct_pb2.Struct()
    payload.update(json.loads(json.dumps(s.payload)))  # tuples become lists
    request = task_service_pb2.SubmitTaskRequest(
        type=s.type,
        payload=payload,
        queue=s.queue or "",
        priority=PRIORITIES.index(s.priority) + 1 if s.priority else 0,  # type: ignore[arg-type]
        idempotency_key=s.idempotency_key or str(uuid.uuid4()),
        fairness_key=s.fairness_key or "",
    )
    if s.max_retries is not None:
        request.max_retries = s.max_retries
    if s.timeout is not None:
        request.timeout.CopyFrom(_seconds(s.timeout, "timeout"))
    if s.lease_duration is not None:
        request.lease_duration.CopyFrom(_seconds(s.lease_duration, "lease_duration"))
    if (when := _when(s)) is not None:
        request.scheduled_at.CopyFrom(when)
    _unique(s, request)
    request.after = s.after or ""
    request.trace_context.update(_caller_trace())
    return request


def _caller_trace() -> dict[str, str]:
    """The caller's current OpenTelemetry span (W3C `traceparent`...), so that
    the task runs in the caller's trace; empty when there is none. Carried per
    submission (not as call metadata) so that it survives batching."""
    from opentelemetry import propagate  # the API only: no SDK is needed

    fields: dict[str, str] = {}
    propagate.inject(fields)
    return fields


class SubmitOptions(TypedDict, total=False):
    """Options of one submission; every one has a server-side default.

    queue: queue name (default `default`). priority: "low", "medium" (default)
    or "high". delay: seconds (or a timedelta) from now before it may run; at:
    an aware datetime instead. max_retries: retries after the first attempt.
    timeout: longest run of one attempt. lease_duration: how long a lease lasts
    without a heartbeat. idempotency_key: makes the submission idempotent
    within the queue (default: a fresh UUID, so the client's own retries never
    duplicate a task). unique_for: seconds (or a timedelta) within which the
    same type, queue and payload (or unique_key) gives back the earlier task
    (`handle.deduplicated`) instead of a new one, counting only earlier tasks
    in unique_states ("pending", "running"...) when given. fairness_key: e.g.
    a customer id: ready tasks of one queue and priority are leased round-robin
    between keys, so one key's backlog does not hold the others back.
    in unique_states ("pending", "running"...) when given. after: the id of
    a task this one waits for (a chain, see `TaskHandle.then`).
    """

    queue: str
    priority: PriorityName
    delay: Seconds
    at: datetime
    max_retries: int
    timeout: Seconds
    lease_duration: Seconds
    idempotency_key: str
    unique_for: Seconds
    unique_key: str
    unique_states: Iterable[str]
    fairness_key: str
    after: str


def group_request(
    members: Iterable[Submission], callback: Submission
) -> task_service_pb2.SubmitGroupRequest:
    """The SubmitGroupRequest: a group's tasks carry no idempotency key."""
    tasks = [submit_request(s) for s in members]
    for request in tasks:
        request.idempotency_key = ""
    last = submit_request(callback)
    last.idempotency_key = ""
    return task_service_pb2.SubmitGroupRequest(tasks=tasks, callback=last)


def batch_requests(submissions: Iterable[Submission]) -> list[task_service_pb2.SubmitTaskRequest]:
    """Requests for `submit_many`, all checked before any is sent."""
    requests = [submit_request(s) for s in submissions]
    if len(requests) > MAX_BATCH:
        raise ValueError(f"submit at most {MAX_BATCH} tasks at once (got {len(requests)})")
    return requests


def list_request(
    state: str | None, type: str | None, queue: str | None, page_size: int, full: bool, token: str
) -> task_service_pb2.ListTasksRequest:
    """One page's ListTasksRequest; `state` is a TaskState value such as "running"."""
    state_value = task_pb2.Task.State.Value(
        f"STATE_{state.upper()}" if state else "STATE_UNSPECIFIED"
    )
    return task_service_pb2.ListTasksRequest(
        page_size=page_size,
        page_token=token,
        state=state_value,
        type=type or "",
        queue=queue or "",
        view=task_pb2.TASK_VIEW_FULL if full else task_pb2.TASK_VIEW_BASIC,
    )
