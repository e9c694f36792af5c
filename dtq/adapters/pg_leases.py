"""Lease writes on PostgreSQL: grant, complete, fail, expire, release. Each is a
compare-and-set on (id, state, lease token); grants and completions go through
group commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from dtq.adapters.group_commit import GroupCommit
from dtq.adapters.pg_base import PgBase, own_error
from dtq.adapters.pg_rows import (
    _RETURNING,
    _RETURNING_BASIC,
    _RETURNING_FENCED,
    BASIC_COLUMNS,
    S,
    _dt,
    _execute_values,
    _in,
    _truncate,
    _without_token,
    row_template,
    tasks_of,
    to_task,
)
from dtq.adapters.pg_tables import tasks
from dtq.domain import states
from dtq.domain.model import (
    LeaseRef,
    Task,
    TaskError,
)
from dtq.domain.states import Event
from dtq.ports import Decide, Grant


class PgLeases(PgBase):
    """Lease transitions of `dtq.ports.TaskStore`."""

    def __init__(self, dsn: str, pool_size: int = 8, timeout: float = 5.0) -> None:
        super().__init__(dsn, pool_size, timeout)
        self._lease = GroupCommit[tuple[Sequence[Grant], float], list[Task]](
            self._lease_flush, max_inflight=1, alone=own_error
        )
        self._complete = GroupCommit[
            tuple[Sequence[tuple[LeaseRef, bytes | None]], float], list[Task | None]
        ](self._complete_flush, max_inflight=1, alone=own_error)

    async def lease(self, grants: Sequence[Grant], now: float) -> list[Task]:
        return await self._lease((grants, now)) if grants else []

    async def _lease_flush(
        self, calls: list[tuple[Sequence[Grant], float]]
    ) -> list[list[Task] | BaseException]:
        now = max(now for _, now in calls)
        values = [(str(g.task_id), g.token, g.worker_id) for grants, _ in calls for g in grants]
        sql = f"""
            UPDATE tasks t SET state = '{S.RUNNING.value}', attempts = t.attempts + 1,
                lease_token = v.token, worker_id = v.worker, started_at = %(now)s,
                updated_at = %(now)s
            FROM (VALUES %s) AS v(id, token, worker)
            WHERE t.id = v.id::uuid AND t.state IN ({_in(Event.LEASE)})
            RETURNING {_RETURNING}"""
        rows = await self._bulk_async(sql, values, {"now": _dt(now)})
        # Keyed by token too: of two grants of one task, only the one that won moved it.
        won = {(r.id, r.lease_token): r for r in rows}
        return [
            [won[key] for g in grants if (key := (g.task_id, g.token)) in won]
            for grants, _ in calls
        ]

    async def _bulk_async(
        self, sql: str, values: list[tuple[Any, ...]], params: dict[str, Any]
    ) -> list[Task]:
        """One `UPDATE ... FROM (VALUES %s)` on the event loop (autocommit: the
        statement is its own transaction); returns the rows."""
        names, rows = await self.aio.fetch(sql, values, row_template(len(values[0])), params)
        return tasks_of(names, rows)

    def _bulk(self, sql: str, values: list[tuple[Any, ...]], params: dict[str, Any]) -> list[Task]:
        """Run an `UPDATE ... FROM (VALUES %s)` and commit; returns the rows."""
        with self.engine.begin() as conn:  # commits the raw cursor's work on exit
            return _execute_values(conn, sql, values, params)

    async def complete(
        self, items: Sequence[tuple[LeaseRef, bytes | None]], now: float
    ) -> list[Task | None]:
        return await self._complete((items, now)) if items else []

    async def _complete_flush(
        self, calls: list[tuple[Sequence[tuple[LeaseRef, bytes | None]], float]]
    ) -> list[list[Task | None] | BaseException]:
        now = max(now for _, now in calls)
        values = [(str(r.task_id), r.token, res) for items, _ in calls for r, res in items]
        sql = f"""
            UPDATE tasks t SET state = '{S.COMPLETED.value}', result = v.result::bytea,
                lease_token = NULL, finished_at = %(now)s, updated_at = %(now)s
            FROM (VALUES %s) AS v(id, token, result)
            WHERE t.id = v.id::uuid AND t.lease_token = v.token
              AND t.state IN ({_in(Event.COMPLETE)})
            RETURNING {_RETURNING_FENCED}"""
        # Keyed by the token that matched: an item with a stale token must not get
        # the task another item of the flush completed.
        updated = await self._bulk_async(sql, values, {"now": _dt(now)})
        done = {(t.id, t.lease_token): t for t in updated}
        return [
            [_without_token(done.get((r.task_id, r.token))) for r, _ in items] for items, _ in calls
        ]

    async def fail(
        self, items: Sequence[tuple[LeaseRef, TaskError]], decide: Decide, now: float
    ) -> list[Task | None]:
        return await self._run(self._resolve, items, decide, now) if items else []

    def _resolve(
        self, items: Sequence[tuple[LeaseRef, TaskError]], decide: Decide, now: float
    ) -> list[Task | None]:
        """Move running tasks to where `decide` says, under a row lock."""
        ids = [r.task_id for r, _ in items]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*BASIC_COLUMNS)
                .where(tasks.c.id.in_(ids), tasks.c.state == S.RUNNING.value)
                .with_for_update()
            )
            current = {r.id: to_task(r) for r in rows}
            values = []
            for ref, error in items:
                task = current.get(ref.task_id)
                if task is None or task.lease_token != ref.token:
                    continue
                to = decide(task, error)
                terminal = to.state in states.TERMINAL
                values.append(
                    (
                        str(ref.task_id),
                        ref.token,
                        to.state.value,
                        _dt(to.scheduled_at),
                        _dt(now) if terminal else None,
                        _truncate(error.message, 4096),
                        _truncate(error.type, 256),
                        _truncate(error.traceback, 32768),
                        int(error.permanent),
                    )
                )
            done = self._resolve_rows(conn, values, now) if values else []
            conn.commit()
        # Only items holding the current token get the task (not a stale duplicate).
        moved = {(t.id, token): t for t in done if (token := current[t.id].lease_token)}
        return [moved.get((r.task_id, r.token)) for r, _ in items]

    @staticmethod
    def _resolve_rows(conn: Connection, values: list[tuple[Any, ...]], now: float) -> list[Task]:
        sql = f"""
            UPDATE tasks t SET state = v.state, scheduled_at = v.scheduled_at::timestamptz,
                finished_at = v.finished_at::timestamptz, lease_token = NULL,
                error_message = v.msg, error_type = v.etype, error_traceback = v.tb,
                error_permanent = v.perm::smallint, updated_at = %(now)s
            FROM (VALUES %s) AS v(id, token, state, scheduled_at, finished_at, msg, etype, tb, perm)
            WHERE t.id = v.id::uuid AND t.lease_token = v.token AND t.state = '{S.RUNNING.value}'
            RETURNING {_RETURNING_BASIC}"""
        return _execute_values(conn, sql, values, {"now": _dt(now)})

    async def expire(
        self, refs: Sequence[LeaseRef], decide: Decide, now: float
    ) -> tuple[list[Task], list[Task]]:
        return await self._run(self._expire, refs, decide, now)

    def _expire(
        self, refs: Sequence[LeaseRef], decide: Decide, now: float
    ) -> tuple[list[Task], list[Task]]:
        lost = TaskError("lease expired before the worker reported an outcome", "LeaseExpired")
        moved = [t for t in self._resolve([(r, lost) for r in refs], decide, now) if t]
        moved_ids = {t.id for t in moved}
        rest = [r.task_id for r in refs if r.task_id not in moved_ids]
        if not rest:
            return moved, []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*BASIC_COLUMNS).where(tasks.c.id.in_(rest), tasks.c.state == S.PENDING.value)
            )
            return moved, [to_task(r) for r in rows]

    async def release(self, refs: Sequence[LeaseRef], now: float) -> list[Task]:
        return await self._run(self._release, refs, now) if refs else []

    def _release(self, refs: Sequence[LeaseRef], now: float) -> list[Task]:
        # The worker gave the lease back unfinished. The attempt keeps its number
        # (attempt numbers are never reused), but does not use up a retry.
        sql = f"""
            UPDATE tasks t SET state = '{states.target(Event.EXPIRE).value}',
                max_retries = t.max_retries + 1, lease_token = NULL,
                updated_at = %(now)s
            FROM (VALUES %s) AS v(id, token)
            WHERE t.id = v.id::uuid AND t.lease_token = v.token
              AND t.state IN ({_in(Event.EXPIRE)})
            RETURNING {_RETURNING_BASIC}"""
        values = [(str(r.task_id), r.token) for r in refs]
        return self._bulk(sql, values, {"now": _dt(now)})
