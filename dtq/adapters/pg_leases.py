"""Lease writes on PostgreSQL: grant, complete, fail, expire, release. Each is a
compare-and-set on (id, state, lease token); grants and completions go through
group commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dtq.adapters import pg_flows
from dtq.adapters import pg_sql as sql
from dtq.adapters.group_commit import GroupCommit
from dtq.adapters.pg_conn import Pg, Values, own_error
from dtq.adapters.pg_rows import as_datetime, truncate, without_token
from dtq.domain import states
from dtq.domain.model import LeaseRef, Task, TaskError
from dtq.ports import Decide, Grant

LeaseCall = tuple[Sequence[Grant], float]
REVOKED = TaskError(
    "lease revoked: the worker did not name it in time (a stream that did not read, or"
    " closed); handed back without using up a retry, so that attempt may still have run",
    "LeaseRevoked",
)
CompleteCall = tuple[Sequence[tuple[LeaseRef, bytes | None]], float]


class PgLeases:
    """Lease transitions of `dtq.ports.TaskStore`."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg
        self._lease = GroupCommit[LeaseCall, list[Task]](
            self._lease_flush, max_inflight=1, alone=own_error
        )
        self._complete = GroupCommit[CompleteCall, list[Task | None]](
            self._complete_flush, max_inflight=1, alone=own_error
        )

    async def lease(self, grants: Sequence[Grant], now: float) -> list[Task]:
        return await self._lease((grants, now)) if grants else []

    async def _lease_flush(self, calls: list[LeaseCall]) -> list[list[Task] | BaseException]:
        now = max(now for _, now in calls)
        rows = [(str(g.task_id), g.token, g.worker_id) for grants, _ in calls for g in grants]
        leased = await self.pg.fetch(sql.LEASE, {"rows": Values(rows), "now": as_datetime(now)})
        # Keyed by token too: of two grants of one task, only the one that won moved it.
        won = {(t.id, t.lease_token): t for t in leased}
        return [
            [won[key] for g in grants if (key := (g.task_id, g.token)) in won]
            for grants, _ in calls
        ]

    async def complete(
        self, items: Sequence[tuple[LeaseRef, bytes | None]], now: float
    ) -> list[Task | None]:
        return await self._complete((items, now)) if items else []

    async def _complete_flush(
        self, calls: list[CompleteCall]
    ) -> list[list[Task | None] | BaseException]:
        now = max(now for _, now in calls)
        rows = [(str(r.task_id), r.token, res) for items, _ in calls for r, res in items]
        async with self.pg.transaction() as tx:
            args = {"rows": Values(rows), "now": as_datetime(now)}
            updated = await tx.fetch(sql.COMPLETE, args)
            await pg_flows.finished(tx, updated, now)
        # Keyed by the token that matched: an item with a stale token must not get
        # the task another item of the flush completed.
        done = {(t.id, t.lease_token): t for t in updated}
        return [
            [without_token(done.get((r.task_id, r.token))) for r, _ in items] for items, _ in calls
        ]

    async def fail(
        self, items: Sequence[tuple[LeaseRef, TaskError]], decide: Decide, now: float
    ) -> list[Task | None]:
        """Move running tasks to where `decide` says, under a row lock."""
        if not items:
            return []
        async with self.pg.transaction() as tx:
            locked = await tx.fetch(sql.LOCK_RUNNING, {"ids": [r.task_id for r, _ in items]})
            current = {t.id: t for t in locked}
            rows = _resolutions(items, current, decide, now)
            args = {"rows": Values(rows), "now": as_datetime(now)} if rows else {}
            done = await tx.fetch(sql.RESOLVE, args) if rows else []
            await pg_flows.finished(tx, done, now)
        # Only items holding the current token get the task (not a stale duplicate).
        moved = {(t.id, token): t for t in done if (token := current[t.id].lease_token)}
        return [moved.get((r.task_id, r.token)) for r, _ in items]

    async def expire(
        self, refs: Sequence[LeaseRef], decide: Decide, now: float
    ) -> tuple[list[Task], list[Task]]:
        lost = TaskError("lease expired before the worker reported an outcome", "LeaseExpired")
        moved = [t for t in await self.fail([(r, lost) for r in refs], decide, now) if t]
        moved_ids = {t.id for t in moved}
        rest = [r.task_id for r in refs if r.task_id not in moved_ids]
        if not rest:
            return moved, []
        return moved, await self.pg.fetch(sql.PENDING_OF, {"ids": rest})

    async def release(
        self, refs: Sequence[LeaseRef], now: float, revoked: bool = False
    ) -> list[Task]:
        """The leases go back unfinished (see the retry budget in pg_sql)."""
        if not refs:
            return []
        rows = [(str(r.task_id), r.token) for r in refs]
        etype, msg = (REVOKED.type, REVOKED.message) if revoked else (None, None)
        params = {"rows": Values(rows), "now": as_datetime(now), "etype": etype, "msg": msg}
        return await self.pg.fetch(sql.RELEASE, params)


def _resolutions(
    items: Sequence[tuple[LeaseRef, TaskError]],
    current: dict[Any, Task],
    decide: Decide,
    now: float,
) -> list[tuple[Any, ...]]:
    """The rows of `pg_sql.RESOLVE`: items holding the current lease, decided."""
    rows = []
    for ref, error in items:
        task = current.get(ref.task_id)
        if task is None or task.lease_token != ref.token:
            continue
        to = decide(task, error)
        terminal = to.state in states.TERMINAL
        rows.append(
            (
                str(ref.task_id),
                ref.token,
                to.state.value,
                as_datetime(to.scheduled_at),
                as_datetime(now) if terminal else None,
                truncate(error.message, 4096),
                truncate(error.type, 256),
                truncate(error.traceback, 32768),
                int(error.permanent),
            )
        )
    return rows
