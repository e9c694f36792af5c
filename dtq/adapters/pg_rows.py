"""Rows of the tasks table <-> domain Tasks, and SQL helpers the PostgreSQL
adapters share."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg2.extras import Json, execute_values
from sqlalchemy import Connection

from dtq.adapters.pg_tables import tasks
from dtq.domain import states
from dtq.domain.model import (
    NewTask,
    Priority,
    Task,
    TaskError,
    TaskState,
)
from dtq.domain.states import Event

Row = Any
S = TaskState

BASIC_COLUMNS = [c for c in tasks.c if c.name not in ("payload", "result", "request_hash")]
FULL_COLUMNS = [c for c in tasks.c if c.name != "request_hash"]
_RETURNING = ", ".join(f"t.{c.name}" for c in FULL_COLUMNS)
_RETURNING_BASIC = ", ".join(f"t.{c.name}" for c in BASIC_COLUMNS)
# The basic columns, but the lease token that matched (v.token) instead of the row's.
_RETURNING_FENCED = ", ".join(
    "v.token AS lease_token" if c.name == "lease_token" else f"t.{c.name}" for c in BASIC_COLUMNS
)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _in(event: Event) -> str:
    """SQL list of the states `event` may start from."""
    return ", ".join(f"'{s.value}'" for s in sorted(states.sources(event)))


# An operator's re-queue of dead letters is the RETRY event (raises at import if
# the state machine ever stops allowing it).
def to_task(row: Row) -> Task:
    m = row._mapping
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
        scheduled_at=_ts(m["scheduled_at"]),
        started_at=_ts(m["started_at"]),
        finished_at=_ts(m["finished_at"]),
        result=bytes(m["result"]) if m.get("result") is not None else None,
        error=error,
        worker_id=m["worker_id"],
        idempotency_key=m["idempotency_key"],
        lease_token=m["lease_token"],
        trace_context=m.get("trace_context"),
    )


def _new_row(task: NewTask, now: float) -> dict[str, Any]:
    return {
        "id": task.id,
        "queue": task.queue,
        "type": task.type,
        "priority": int(task.priority),
        "state": (S.SCHEDULED if task.scheduled_at else S.PENDING).value,
        "attempts": 0,
        "max_retries": task.max_retries,
        "timeout_ms": round(task.timeout * 1000),
        "lease_ms": round(task.lease_duration * 1000),
        "payload": task.payload,
        "idempotency_key": task.idempotency_key,
        "request_hash": task.request_hash,
        "created_at": _dt(now),
        "updated_at": _dt(now),
        "scheduled_at": _dt(task.scheduled_at),
        "trace_context": task.trace_context,
    }


_NEW_COLUMNS = (
    "id", "queue", "type", "priority", "state", "attempts", "max_retries", "timeout_ms",
    "lease_ms", "payload", "idempotency_key", "request_hash", "created_at", "updated_at",
    "scheduled_at", "trace_context",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO tasks ({', '.join(_NEW_COLUMNS)}) VALUES %s ON CONFLICT DO NOTHING RETURNING id"
)
_INSERT_ROW = "(%s::uuid, " + ", ".join(["%s"] * (len(_NEW_COLUMNS) - 2)) + ", %s::jsonb)"


def _insert_values(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows of `_INSERT` (one `_INSERT_ROW` each), from `_new_row`."""
    return [
        (
            str(r["id"]), *(r[c] for c in _NEW_COLUMNS[1:-1]),
            Json(r["trace_context"]) if r["trace_context"] is not None else None,
        )
        for r in rows
    ]  # fmt: skip


def _insert_new(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert `rows` (from `_new_row`) in one statement on the raw connection
    (SQLAlchemy's insertmanyvalues cost more CPU than the database did);
    returns the ids inserted, as text. The caller's transaction commits."""
    if not conn.in_transaction():
        conn.begin()  # else a commit of this connection would not commit the rows
    raw = conn.connection.dbapi_connection
    assert raw is not None
    values = _insert_values(rows)
    cur = raw.cursor()
    try:
        out = execute_values(cur, _INSERT, values, _INSERT_ROW, page_size=len(values), fetch=True)
    finally:
        cur.close()
    return {str(row[0]) for row in out}


def _new_task(task: NewTask, now: float) -> Task:
    """The task as a read would return it (times at PostgreSQL's microseconds)."""
    now = _ts(_dt(now)) or now
    return Task(
        id=task.id,
        type=task.type,
        queue=task.queue,
        priority=task.priority,
        state=S.SCHEDULED if task.scheduled_at else S.PENDING,
        attempts=0,
        max_retries=task.max_retries,
        timeout=task.timeout,
        lease_duration=task.lease_duration,
        created_at=now,
        updated_at=now,
        payload=task.payload,
        scheduled_at=_ts(_dt(task.scheduled_at)),
        idempotency_key=task.idempotency_key,
        trace_context=task.trace_context,
    )


def _truncate(text_value: str, limit: int) -> str:
    return text_value if len(text_value) <= limit else text_value[: limit - 3] + "..."


def _execute_values(
    conn: Connection, sql: str, values: list[tuple[Any, ...]], params: dict[str, Any]
) -> list[Task]:
    """`sql` holds one `%s` for the VALUES list and named `%(x)s` parameters."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cur = raw.cursor()
    try:
        bound = cur.mogrify(sql.replace("%s", "%%s"), params).decode()
        rows = execute_values(cur, bound, values, page_size=max(1, len(values)), fetch=True)
        names = [d[0] for d in cur.description or ()]
    finally:
        cur.close()
    return tasks_of(names, rows)


def tasks_of(names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> list[Task]:
    """Tasks from the rows of a raw statement, with its column names."""
    return [to_task(_RowLike(dict(zip(names, r, strict=True)))) for r in rows]


def row_template(width: int) -> str:
    return "(" + ", ".join(["%s"] * width) + ")"


def _without_token(task: Task | None) -> Task | None:
    return None if task is None else dataclasses.replace(task, lease_token=None)


class _RowLike:
    """Gives a dict the `._mapping` face of a SQLAlchemy row."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping
