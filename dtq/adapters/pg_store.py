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

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from psycopg2.extras import execute_values
from sqlalchemy import Connection, create_engine, exc, func, select, text
from sqlalchemy.dialects.postgresql import insert

from dtq.adapters.breaker import CircuitBreaker
from dtq.adapters.group_commit import GroupCommit
from dtq.adapters.pg_tables import tasks
from dtq.domain import states
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import (
    LeaseRef,
    NewTask,
    Priority,
    Submitted,
    Task,
    TaskError,
    TaskFilter,
    TaskState,
)
from dtq.domain.states import Event
from dtq.ports import Decide, Grant

T = TypeVar("T")
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
_REQUEUED = states.apply(S.DEAD_LETTERED, Event.RETRY).value
# What retention deletes: finished tasks, except dead letters, which stay until
# an operator re-queues or purges them.
_EXPIRABLE = ", ".join(f"'{s.value}'" for s in sorted(states.TERMINAL - {S.DEAD_LETTERED}))
PURGE_BATCH = 1000  # rows deleted per transaction
# Batches pick their rows with `id = ANY(ARRAY(SELECT ... LIMIT n FOR UPDATE SKIP
# LOCKED))`: an InitPlan run once. `id IN (SELECT ...)` may become a semi-join
# that rescans the locking subquery per row and so ignores the LIMIT.


def _dead_letters(
    queue: str, task_type: str | None, after: uuid.UUID | None
) -> tuple[str, dict[str, Any]]:
    """`SELECT id` of the dead letters of `queue` (of `task_type`, ids after `after`)."""
    where = [f"state = '{S.DEAD_LETTERED.value}'", "queue = :queue"]
    params: dict[str, Any] = {"queue": queue}
    if task_type:
        where.append("type = :type")
        params["type"] = task_type
    if after is not None:
        where.append("id > :after")
        params["after"] = after
    return "SELECT id FROM tasks WHERE " + " AND ".join(where), params


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
    }


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
    )


def _truncate(text_value: str, limit: int) -> str:
    return text_value if len(text_value) <= limit else text_value[: limit - 3] + "..."


InsertCall = tuple[Sequence[NewTask], float]


class PgStore:
    """PostgreSQL implementation of `dtq.ports.TaskStore`."""

    def __init__(self, dsn: str, pool_size: int = 8, timeout: float = 5.0) -> None:
        self.engine = create_engine(
            dsn,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=timeout,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": max(1, round(timeout)),
                # Ack after commit: never let a server default weaken durability.
                "options": f"-c statement_timeout={round(timeout * 1000)} -c synchronous_commit=on",
                "application_name": "dtq",
            },
        )
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="pg")
        self.breaker = CircuitBreaker("postgres")
        self._insert = GroupCommit[InsertCall, list[Submitted]](
            partial(self._run, self._insert_flush), max_inflight=max(1, pool_size // 2)
        )
        self._lease = GroupCommit[tuple[Sequence[Grant], float], list[Task]](
            partial(self._run, self._lease_flush), max_inflight=max(1, pool_size // 4)
        )
        self._complete = GroupCommit[
            tuple[Sequence[tuple[LeaseRef, bytes | None]], float], list[Task | None]
        ](partial(self._run, self._complete_flush), max_inflight=max(1, pool_size // 4))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self.breaker.before()  # fails fast while PostgreSQL is known to be down
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(self._guard, fn, *args))

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            result = fn(*args)
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
            self.breaker.failure()
            raise DtqError.unavailable(
                "postgres", f"PostgreSQL is unreachable: {error.__class__.__name__}"
            ) from error
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        return result

    # -- submit -------------------------------------------------------------

    async def insert(self, new: Sequence[NewTask], now: float) -> list[Submitted]:
        return await self._insert((new, now))

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
            stmt = insert(tasks).on_conflict_do_nothing().returning(tasks.c.id)
            inserted = set(conn.execute(stmt, fresh).scalars())
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

    # -- reads --------------------------------------------------------------

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

    async def ping(self) -> None:
        await self._run(self._ping)

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- leases and outcomes -------------------------------------------------

    async def lease(self, grants: Sequence[Grant], now: float) -> list[Task]:
        return await self._lease((grants, now)) if grants else []

    def _lease_flush(
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
        rows = self._bulk(sql, values, {"now": _dt(now)})
        # Keyed by token too: of two grants of one task, only the one that won moved it.
        won = {(r.id, r.lease_token): r for r in rows}
        return [
            [won[key] for g in grants if (key := (g.task_id, g.token)) in won]
            for grants, _ in calls
        ]

    def _bulk(self, sql: str, values: list[tuple[Any, ...]], params: dict[str, Any]) -> list[Task]:
        """Run an `UPDATE ... FROM (VALUES %s)` and commit; returns the rows."""
        with self.engine.begin() as conn:  # commits the raw cursor's work on exit
            return _execute_values(conn, sql, values, params)

    async def complete(
        self, items: Sequence[tuple[LeaseRef, bytes | None]], now: float
    ) -> list[Task | None]:
        return await self._complete((items, now)) if items else []

    def _complete_flush(
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
        done = {(t.id, t.lease_token): t for t in self._bulk(sql, values, {"now": _dt(now)})}
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
        # The worker gave the lease back unfinished: the attempt does not count.
        sql = f"""
            UPDATE tasks t SET state = '{states.target(Event.EXPIRE).value}',
                attempts = GREATEST(t.attempts - 1, 0), lease_token = NULL,
                updated_at = %(now)s
            FROM (VALUES %s) AS v(id, token)
            WHERE t.id = v.id::uuid AND t.lease_token = v.token
              AND t.state IN ({_in(Event.EXPIRE)})
            RETURNING {_RETURNING_BASIC}"""
        values = [(str(r.task_id), r.token) for r in refs]
        return self._bulk(sql, values, {"now": _dt(now)})

    # -- user and operator actions -------------------------------------------

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

    # -- dead letters and retention ----------------------------------------------

    async def requeue_dead(
        self,
        queue: str,
        task_type: str | None,
        limit: int,
        now: float,
        after: uuid.UUID | None = None,
    ) -> list[Task]:
        return await self._run(self._requeue_dead, queue, task_type, limit, now, after)

    def _requeue_dead(
        self, queue: str, task_type: str | None, limit: int, now: float, after: uuid.UUID | None
    ) -> list[Task]:
        # The budget as in _retry: max_retries + 1 more attempts each.
        pick, params = _dead_letters(queue, task_type, after)
        sql = text(f"""
            UPDATE tasks t SET state = '{_REQUEUED}', scheduled_at = NULL,
                finished_at = NULL, updated_at = :now, max_retries = t.attempts + t.max_retries
            WHERE t.id = ANY(ARRAY({pick} ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED))
              AND t.state = '{S.DEAD_LETTERED.value}'
            RETURNING {_RETURNING_BASIC}""")
        with self.engine.connect() as conn:
            rows = conn.execute(sql, {**params, "now": _dt(now), "limit": limit}).all()
            conn.commit()
        return sorted((to_task(r) for r in rows), key=lambda t: t.id)

    async def count_dead(self, queue: str, task_type: str | None) -> int:
        return await self._run(self._count_dead, queue, task_type)

    def _count_dead(self, queue: str, task_type: str | None) -> int:
        pick, params = _dead_letters(queue, task_type, None)
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM ({pick}) d"), params).scalar_one())

    async def purge_dead(self, queue: str, task_type: str | None) -> int:
        return await self._run(self._purge_dead, queue, task_type)

    def _purge_dead(self, queue: str, task_type: str | None) -> int:
        """Oldest first, PURGE_BATCH rows per transaction; each row visited once."""
        total, after = 0, None
        while True:
            pick, params = _dead_letters(queue, task_type, after)
            sql = text(f"""
                DELETE FROM tasks t
                WHERE t.id = ANY(ARRAY({pick} ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED))
                  AND t.state = '{S.DEAD_LETTERED.value}'
                RETURNING t.id""")
            with self.engine.connect() as conn:
                ids = conn.execute(sql, {**params, "limit": PURGE_BATCH}).scalars().all()
                conn.commit()
            total += len(ids)
            if len(ids) < PURGE_BATCH:
                return total
            after = max(ids)

    async def purge_finished(self, before: float, limit: int) -> int:
        return await self._run(self._purge_finished, before, limit)

    def _purge_finished(self, before: float, limit: int) -> int:
        # Small transactions: a backlog is deleted by repeated calls, never one big DELETE.
        sql = text(f"""
            DELETE FROM tasks WHERE id = ANY(ARRAY(
                SELECT id FROM tasks WHERE state IN ({_EXPIRABLE}) AND finished_at < :before
                LIMIT :limit FOR UPDATE SKIP LOCKED))""")
        with self.engine.connect() as conn:
            deleted = conn.execute(sql, {"before": _dt(before), "limit": limit}).rowcount
            conn.commit()
        return int(deleted)

    # -- scheduling -------------------------------------------------------------

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

    # -- reconciliation -------------------------------------------------------------

    async def scan_open(self, after: uuid.UUID | None, limit: int) -> list[Task]:
        """PENDING and RUNNING tasks in id order, after `after` (keyset)."""
        return await self._run(self._scan_open, after, limit)

    def _scan_open(self, after: uuid.UUID | None, limit: int) -> list[Task]:
        query = select(*BASIC_COLUMNS).where(tasks.c.state.in_([S.PENDING.value, S.RUNNING.value]))
        if after is not None:
            query = query.where(tasks.c.id > after)
        with self.engine.connect() as conn:
            return [to_task(r) for r in conn.execute(query.order_by(tasks.c.id).limit(limit))]


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
    return [to_task(_RowLike(dict(zip(names, r, strict=True)))) for r in rows]


def _without_token(task: Task | None) -> Task | None:
    return None if task is None else dataclasses.replace(task, lease_token=None)


class _RowLike:
    """Gives a dict the `._mapping` face of a SQLAlchemy row."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping
