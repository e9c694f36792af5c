"""TaskStore on PostgreSQL (SQLAlchemy 2 Core over psycopg2).

Every state change is a compare-and-set: `WHERE state IN (allowed sources)`,
plus `AND lease_token = ...` for a worker's write, so a stale worker or a
racing process can never overwrite a newer state. Bulk writes (submit, lease,
complete) go through group commit and `UPDATE ... FROM (VALUES ...)`: one round
trip and one transaction for many tasks.

psycopg2 is blocking, so calls run in a thread pool sized like the connection
pool; the event loop never waits on the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select, text

from dtq.adapters.group_commit import GroupCommit
from dtq.adapters.pg_base import REFUSED, own_error, refused
from dtq.adapters.pg_dead_letters import PgDeadLetters
from dtq.adapters.pg_leases import PgLeases
from dtq.adapters.pg_rows import (
    _INSERT,
    _INSERT_ROW,
    _RETURNING,
    _RETURNING_BASIC,
    BASIC_COLUMNS,
    FULL_COLUMNS,
    S,
    _dt,
    _in,
    _insert_new,
    _insert_values,
    _new_row,
    _new_task,
    _ts,
    to_task,
)
from dtq.adapters.pg_tables import tasks
from dtq.domain import states
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import (
    NewTask,
    Submitted,
    Task,
    TaskFilter,
    TaskState,
)
from dtq.domain.states import Event

InsertCall = tuple[Sequence[NewTask], float]


class PgStore(PgLeases, PgDeadLetters):
    """PostgreSQL implementation of `dtq.ports.TaskStore`."""

    def __init__(self, dsn: str, pool_size: int = 8, timeout: float = 5.0) -> None:
        super().__init__(dsn, pool_size, timeout)
        # One flush at a time: calls that arrive meanwhile share the next one.
        # More in flight made batches of one (measured: 96% of flushes) and
        # cost more CPU per task than PostgreSQL saved in waiting.
        # A flush refused for one call's data is retried call by call.
        self._insert = GroupCommit[InsertCall, list[Submitted]](
            self._insert_flush_async, max_inflight=1, alone=own_error
        )

    async def insert(self, new: Sequence[NewTask], now: float) -> list[Submitted]:
        try:
            return await self._insert((new, now))
        except REFUSED as error:
            raise refused(error) from error

    async def _insert_flush_async(
        self, calls: list[InsertCall]
    ) -> list[list[Submitted] | BaseException]:
        """Without idempotency keys a flush is one INSERT, run on the event loop
        (its own transaction). With keys, the lookups and the insert share a
        transaction on a thread (`_insert_flush`)."""
        if any(t.idempotency_key for new, _ in calls for t in new):
            return await self._run(self._insert_flush, calls)
        rows = [_new_row(t, now) for new, now in calls for t in new]
        _, out = await self.aio.fetch(_INSERT, _insert_values(rows), _INSERT_ROW, {})
        inserted = {str(r[0]) for r in out}
        if len(inserted) != len(rows):  # ids are fresh uuid7s: nothing can conflict
            raise RuntimeError(f"{len(rows) - len(inserted)} new tasks were not inserted")
        return [[Submitted(_new_task(t, now), False) for t in new] for new, now in calls]

    def _insert_flush(self, calls: list[InsertCall]) -> list[list[Submitted] | BaseException]:
        results: list[list[Submitted] | BaseException] = [
            DtqError(Code.UNAVAILABLE, "INTERNAL_RETRY", "not attempted")
        ] * len(calls)
        live = list(range(len(calls)))
        while live:
            with self.engine.connect() as conn:
                done, conflicted = self._try_insert(conn, calls, live)
                if not conflicted:
                    conn.commit()
                    for i, subs in done.items():
                        results[i] = subs
                    return results
                conn.rollback()
            for i in conflicted:
                results[i] = DtqError(
                    Code.ALREADY_EXISTS,
                    "IDEMPOTENCY_KEY_REUSED",
                    "idempotency key was already used for a different request in this queue",
                )
            live = [i for i in live if i not in conflicted]
        return results

    def _try_insert(
        self, conn: Connection, calls: list[InsertCall], live: list[int]
    ) -> tuple[dict[int, list[Submitted]], set[int]]:
        rows = []
        for i in live:
            new, now = calls[i]
            rows += [_new_row(t, now) for t in new]
        keyed = {(r["queue"], r["idempotency_key"]) for r in rows if r["idempotency_key"]}
        existing = self._by_keys(conn, keyed) if keyed else {}
        fresh = [r for r in rows if (r["queue"], r["idempotency_key"]) not in existing]
        inserted: set[uuid.UUID] = set()
        if fresh:
            ids = _insert_new(conn, fresh)
            inserted = {r["id"] for r in fresh if str(r["id"]) in ids}
        lost = {(r["queue"], r["idempotency_key"]) for r in fresh if r["id"] not in inserted}
        if lost:
            existing.update(self._by_keys(conn, lost))
        done: dict[int, list[Submitted]] = {}
        conflicted: set[int] = set()
        for i in live:
            subs, now = [], calls[i][1]
            for t in calls[i][0]:
                if t.id in inserted:
                    subs.append(Submitted(_new_task(t, now), False))
                    continue
                prior, prior_hash = existing[(t.queue, t.idempotency_key)]
                if prior_hash != t.request_hash:
                    conflicted.add(i)
                subs.append(Submitted(prior, True))
            done[i] = subs
        return done, conflicted

    @staticmethod
    def _by_keys(
        conn: Connection, keys: set[tuple[str, str | None]]
    ) -> dict[Any, tuple[Task, bytes]]:
        found: dict[Any, tuple[Task, bytes]] = {}
        for queue in {q for q, _ in keys}:
            wanted = [k for q, k in keys if q == queue]
            rows = conn.execute(
                select(*FULL_COLUMNS, tasks.c.request_hash).where(
                    tasks.c.queue == queue, tasks.c.idempotency_key.in_(wanted)
                )
            )
            for row in rows:
                found[(queue, row.idempotency_key)] = (to_task(row), bytes(row.request_hash or b""))
        return found

    async def get(self, task_id: uuid.UUID, with_payload: bool = True) -> Task | None:
        return await self._run(self._get, task_id, with_payload)

    def _get(self, task_id: uuid.UUID, with_payload: bool) -> Task | None:
        cols = FULL_COLUMNS if with_payload else BASIC_COLUMNS
        with self.engine.connect() as conn:
            row = conn.execute(select(*cols).where(tasks.c.id == task_id)).first()
        return to_task(row) if row else None

    async def get_many(self, ids: Sequence[uuid.UUID]) -> list[Task]:
        return await self._run(self._get_many, list(ids)) if ids else []

    def _get_many(self, ids: list[uuid.UUID]) -> list[Task]:
        with self.engine.connect() as conn:
            return [
                to_task(r) for r in conn.execute(select(*BASIC_COLUMNS).where(tasks.c.id.in_(ids)))
            ]

    async def list_tasks(
        self, filters: TaskFilter, before: uuid.UUID | None, limit: int, with_payload: bool
    ) -> list[Task]:
        return await self._run(self._list_tasks, filters, before, limit, with_payload)

    def _list_tasks(
        self, filters: TaskFilter, before: uuid.UUID | None, limit: int, with_payload: bool
    ) -> list[Task]:
        query = select(*(FULL_COLUMNS if with_payload else BASIC_COLUMNS))
        if filters.state:
            query = query.where(tasks.c.state == filters.state.value)
        if filters.type:
            query = query.where(tasks.c.type == filters.type)
        if filters.queue:
            query = query.where(tasks.c.queue == filters.queue)
        if before:
            query = query.where(tasks.c.id < before)
        query = query.order_by(tasks.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [to_task(r) for r in conn.execute(query)]

    async def state_counts(self, queue: str | None) -> dict[tuple[str, TaskState], int]:
        return await self._run(self._state_counts, queue)

    def _state_counts(self, queue: str | None) -> dict[tuple[str, TaskState], int]:
        wanted = [S.SCHEDULED.value, S.FAILED.value, S.DEAD_LETTERED.value]
        query = (
            select(tasks.c.queue, tasks.c.state, func.count())
            .where(tasks.c.state.in_(wanted))
            .group_by(tasks.c.queue, tasks.c.state)
        )
        if queue:
            query = query.where(tasks.c.queue == queue)
        with self.engine.connect() as conn:
            return {(q, TaskState(s)): n for q, s, n in conn.execute(query)}

    async def cancel(self, task_id: uuid.UUID, now: float) -> tuple[Task, TaskState, str | None]:
        return await self._run(self._cancel, task_id, now)

    def _cancel(self, task_id: uuid.UUID, now: float) -> tuple[Task, TaskState, str | None]:
        sql = text(f"""
            WITH old AS (SELECT id, state, lease_token FROM tasks WHERE id = :id FOR UPDATE)
            UPDATE tasks t SET state = '{S.CANCELLED.value}', lease_token = NULL,
                finished_at = :now, updated_at = :now
            FROM old WHERE t.id = old.id AND old.state IN ({_in(Event.CANCEL)})
            RETURNING {_RETURNING}, old.state AS old_state, old.lease_token AS old_token""")
        with self.engine.connect() as conn:
            row = conn.execute(sql, {"id": task_id, "now": _dt(now)}).first()
            conn.commit()
        if row is None:
            self._explain_refusal(task_id, Event.CANCEL)
        assert row is not None
        return to_task(row), TaskState(row.old_state), row.old_token

    async def retry(self, task_id: uuid.UUID, now: float) -> Task:
        return await self._run(self._retry, task_id, now)

    def _retry(self, task_id: uuid.UUID, now: float) -> Task:
        # A dead-lettered task gets max_retries + 1 more attempts.
        sql = text(f"""
            UPDATE tasks t SET state = '{S.PENDING.value}', scheduled_at = NULL,
                finished_at = NULL, updated_at = :now,
                max_retries = CASE WHEN t.state = '{S.DEAD_LETTERED.value}'
                                   THEN t.attempts + t.max_retries ELSE t.max_retries END
            WHERE t.id = :id AND t.state IN ({_in(Event.RETRY)})
            RETURNING {_RETURNING}""")
        with self.engine.connect() as conn:
            row = conn.execute(sql, {"id": task_id, "now": _dt(now)}).first()
            conn.commit()
        if row is None:
            self._explain_refusal(task_id, Event.RETRY)
        return to_task(row)

    def _explain_refusal(self, task_id: uuid.UUID, event: Event) -> None:
        task = self._get(task_id, with_payload=False)
        if task is None:
            raise DtqError.not_found("task", str(task_id))
        states.apply(task.state, event)  # raises FAILED_PRECONDITION
        raise DtqError.failed_precondition("CONCURRENT_UPDATE", "the task changed; try again")

    async def promote_due(self, now: float, limit: int) -> list[Task]:
        return await self._run(self._promote_due, now, limit)

    def _promote_due(self, now: float, limit: int) -> list[Task]:
        sql = text(f"""
            UPDATE tasks t SET state = '{S.PENDING.value}', updated_at = :now
            WHERE t.id = ANY(ARRAY(
                SELECT id FROM tasks
                WHERE state IN ({_in(Event.PROMOTE)}) AND scheduled_at <= :now
                ORDER BY scheduled_at LIMIT :limit FOR UPDATE SKIP LOCKED))
            RETURNING {_RETURNING_BASIC}""")
        with self.engine.connect() as conn:
            rows = conn.execute(sql, {"now": _dt(now), "limit": limit}).all()
            conn.commit()
        return [to_task(r) for r in rows]

    async def next_due(self) -> float | None:
        return await self._run(self._next_due)

    def _next_due(self) -> float | None:
        query = select(func.min(tasks.c.scheduled_at)).where(
            tasks.c.state.in_([s.value for s in states.sources(Event.PROMOTE)])
        )
        with self.engine.connect() as conn:
            return _ts(conn.execute(query).scalar())

    async def scan_open(self, after: uuid.UUID | None, limit: int) -> list[Task]:
        """PENDING and RUNNING tasks in id order, after `after` (keyset)."""
        return await self._run(self._scan_open, after, limit)

    def _scan_open(self, after: uuid.UUID | None, limit: int) -> list[Task]:
        query = select(*BASIC_COLUMNS).where(tasks.c.state.in_([S.PENDING.value, S.RUNNING.value]))
        if after is not None:
            query = query.where(tasks.c.id > after)
        with self.engine.connect() as conn:
            return [to_task(r) for r in conn.execute(query.order_by(tasks.c.id).limit(limit))]
