"""Rows of PostgreSQL <-> domain objects: tasks, API keys, audit events, limits,
tenants, schedules."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg2.extras import Json

from dtq.domain.audit import AuditEvent
from dtq.domain.auth import ApiKey, Role
from dtq.domain.limits import DispatchRate, TenantLimits
from dtq.domain.model import Attempt, NewTask, Priority, Task, TaskError, TaskState
from dtq.domain.schedule import CatchUp, Origin, Overlap, Schedule, Template, Timing
from dtq.domain.tenants import Tenant

Row = Mapping[str, Any]  # a row by column name
S = TaskState


def as_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def as_seconds(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def to_task(m: Row) -> Task:
    error = None
    if m["error_message"] is not None:
        error = TaskError(
            m["error_message"],
            m["error_type"] or "",
            m["error_traceback"] or "",
            bool(m["error_permanent"]),
        )
    return Task(
        id=m["id"],
        type=m["type"],
        queue=m["queue"],
        priority=Priority(m["priority"]),
        state=TaskState(m["state"]),
        attempts=m["attempts"],
        max_retries=m["max_retries"],
        timeout=m["timeout_ms"] / 1000,
        lease_duration=m["lease_ms"] / 1000,
        created_at=m["created_at"].timestamp(),
        updated_at=m["updated_at"].timestamp(),
        payload=bytes(m["payload"]) if m.get("payload") is not None else None,
        scheduled_at=as_seconds(m["scheduled_at"]),
        started_at=as_seconds(m["started_at"]),
        finished_at=as_seconds(m["finished_at"]),
        result=bytes(m["result"]) if m.get("result") is not None else None,
        error=error,
        worker_id=m["worker_id"],
        idempotency_key=m["idempotency_key"],
        lease_token=m["lease_token"],
        trace_context=m.get("trace_context"),
        tenant=m["tenant"],
        fairness_key=m.get("fairness_key") or "",
        parent_id=m.get("parent_id"),
        group_id=m.get("group_id"),
        callback_of=m.get("callback_of"),
        parent_result=bytes(m["parent_result"]) if m.get("parent_result") is not None else None,
        root_id=m.get("root_id"),
        attempt_log=_attempt_log(m["attempt_log"]) if "attempt_log" in m else None,
    )


def _attempt_log(entries: list[dict[str, Any]] | None) -> tuple[Attempt, ...]:
    """attempt_log as written by `pg_sql._logged` (timestamps in ISO 8601)."""
    return tuple(
        Attempt(
            attempt=e["attempt"],
            worker_id=e.get("worker_id") or "",
            started_at=_iso_seconds(e.get("started_at")),
            ended_at=_iso_seconds(e.get("ended_at")),
            error=TaskError(
                e.get("error_message") or "",
                e.get("error_type") or "",
                e.get("error_traceback") or "",
                bool(e.get("error_permanent")),
            ),
        )
        for e in entries or ()
    )


def _iso_seconds(stamp: str | None) -> float | None:
    return None if stamp is None else datetime.fromisoformat(stamp).timestamp()


def first_state(task: NewTask) -> TaskState:
    """Where a new task starts (a chain step whose parent is already finished
    is moved on in the same transaction, see pg_flows)."""
    if task.after or task.callback_of:
        return S.WAITING
    return S.SCHEDULED if task.scheduled_at else S.PENDING


def new_row(task: NewTask, now: float) -> tuple[Any, ...]:
    """The row of `pg_sql.INSERT_TASKS` (in `NEW_COLUMNS` order) for `task`."""
    at = as_datetime(now)
    trace = Json(task.trace_context) if task.trace_context is not None else None
    state = first_state(task)
    return (
        str(task.id), task.queue, task.type, int(task.priority), state.value, 0,
        task.max_retries, round(task.timeout * 1000), round(task.lease_duration * 1000),
        task.payload, task.idempotency_key, task.request_hash, at, at,
        as_datetime(task.scheduled_at), trace, task.unique.digest if task.unique else None,
        task.tenant, task.fairness_key,
        _text(task.after or task.child_of), _text(task.group_id), _text(task.callback_of),
        _text(task.root_id),
    )  # fmt: skip


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def new_task(task: NewTask, now: float) -> Task:
    """The task as a read would return it (times at PostgreSQL's microseconds)."""
    now = as_seconds(as_datetime(now)) or now
    return Task(
        id=task.id,
        type=task.type,
        queue=task.queue,
        priority=task.priority,
        state=first_state(task),
        attempts=0,
        max_retries=task.max_retries,
        timeout=task.timeout,
        lease_duration=task.lease_duration,
        created_at=now,
        updated_at=now,
        payload=task.payload,
        scheduled_at=as_seconds(as_datetime(task.scheduled_at)),
        idempotency_key=task.idempotency_key,
        trace_context=task.trace_context,
        tenant=task.tenant,
        fairness_key=task.fairness_key,
        parent_id=task.after or task.child_of,
        root_id=task.root_id,
        group_id=task.group_id,
        callback_of=task.callback_of,
    )


def api_key(row: Row) -> ApiKey:
    return ApiKey(
        row["id"],
        row["name"],
        Role(row["role"]),
        frozenset(row["queues"]),
        row["tenant"],
        row["created_at"].timestamp(),
        as_seconds(row["expires_at"]),
        as_seconds(row["revoked_at"]),
        as_seconds(row["last_used_at"]),
    )


def audit_event(row: Row) -> AuditEvent:
    detail = row["detail"]
    return AuditEvent(
        row["at"].timestamp(),
        row["actor"],
        row["role"],
        row["action"],
        row["target"],
        row["outcome"],
        detail if isinstance(detail, str) else json.dumps(detail),
        row["id"],
        row["tenant"],
    )


def tenant(row: Row) -> Tenant:
    return Tenant(row["name"], row["weight"], row["created_at"].timestamp())


def truncate(text_value: str, limit: int) -> str:
    return text_value if len(text_value) <= limit else text_value[: limit - 3] + "..."


def without_token(task: Task | None) -> Task | None:
    return None if task is None else dataclasses.replace(task, lease_token=None)


def tenant_limits(m: Row) -> TenantLimits:
    return TenantLimits(
        m["tenant"],
        m["submit_rate"],
        m["submit_burst"],
        m["max_queued"],
        m["updated_at"].timestamp(),
        m["max_running"],
        m["key_max_running"],
        json.loads(weights) if isinstance(weights := m["key_weights"], str) else dict(weights),
    )


def dispatch_rate(m: Row) -> DispatchRate:
    return DispatchRate(
        m["queue"], m["task_type"], m["rate"], m["burst"], m["updated_at"].timestamp()
    )


def to_schedule(row: Row) -> Schedule:
    timing = Timing(row["cron"], row["time_zone"], row["interval_ms"] / 1000)
    template = Template(
        row["task_type"],
        bytes(row["payload"]),
        row["queue"],
        Priority(row["priority"]),
        row["max_retries"],
        None if row["timeout_ms"] is None else row["timeout_ms"] / 1000,
    )
    return Schedule(
        row["name"],
        timing,
        template,
        Overlap(row["overlap"]),
        CatchUp(row["catch_up"]),
        row["catch_up_limit"],
        row["paused"],
        Origin(row["origin"]),
        as_seconds(row["next_fire_at"]),
        as_seconds(row["last_fire_at"]),
        row["last_task_id"],
        TaskState(row["last_state"]) if row["last_state"] else None,
        row["created_at"].timestamp(),
        row["updated_at"].timestamp(),
    )


def schedule_row(s: Schedule) -> dict[str, Any]:
    """The named parameters of `pg_sql.CREATE_SCHEDULE` and `UPDATE_SCHEDULE`."""
    t = s.task
    return {
        "name": s.name,
        "cron": s.timing.cron,
        "time_zone": s.timing.time_zone,
        "interval_ms": round(s.timing.interval * 1000),
        "task_type": t.type,
        "payload": t.payload,
        "queue": t.queue,
        "priority": int(t.priority),
        "max_retries": t.max_retries,
        "timeout_ms": None if t.timeout is None else round(t.timeout * 1000),
        "overlap": s.overlap.value,
        "catch_up": s.catch_up.value,
        "catch_up_limit": s.catch_up_limit,
        "paused": s.paused,
        "origin": s.origin.value,
        "next_fire_at": as_datetime(s.next_fire_at),
        "last_fire_at": as_datetime(s.last_fire_at),
        "last_task_id": s.last_task_id,
        "created_at": as_datetime(s.created_at),
        "updated_at": as_datetime(s.updated_at),
    }
