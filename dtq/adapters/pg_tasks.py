"""Reading tasks, and an operator's writes to one task: cancel and retry."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from dtq.adapters import pg_flows
from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_rows import as_datetime
from dtq.domain import ids, states
from dtq.domain.errors import DtqError
from dtq.domain.model import Cancelled, Family, Task, TaskFilter, TaskState
from dtq.domain.states import Event


class PgTasks:
    """The reads of `dtq.ports.TaskStore`, and cancel and retry."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def get(self, task_id: uuid.UUID, with_payload: bool = True) -> Task | None:
        found = await self.pg.fetch(
            sql.GET_TASK if with_payload else sql.GET_TASK_BASIC, {"id": task_id}
        )
        return found[0] if found else None

    async def get_many(self, ids: Sequence[uuid.UUID]) -> list[Task]:
        return await self.pg.fetch(sql.GET_TASKS, {"ids": list(ids)}) if ids else []

    async def list_tasks(
        self, filters: TaskFilter, before: uuid.UUID | None, limit: int, with_payload: bool
    ) -> list[Task]:
        args = {
            "state": filters.state.value if filters.state else None,
            "type": filters.type or None,
            "queue": filters.queue or None,
            "tenant": filters.tenant,
            "parent": filters.parent_id,
            "root": filters.root_id,
            "before": before,
            "limit": limit,
            "key": filters.idempotency_key,
            **_created(filters.created_after, filters.created_before),
        }
        if filters.idempotency_key:
            return await self.pg.fetch(
                sql.LIST_BY_KEY if with_payload else sql.LIST_BY_KEY_BASIC, args
            )
        return await self.pg.fetch(sql.LIST_TASKS if with_payload else sql.LIST_TASKS_BASIC, args)

    async def state_counts(
        self, queue: str | None, tenant: str | None = None
    ) -> dict[tuple[str, TaskState], int]:
        """Keyed by (the tenant's queue, state): see `dtq.domain.tenants.tenant_queue`."""
        args = {"queue": queue or None, "tenant": tenant}
        return dict(await self.pg.fetch(sql.STATE_COUNTS, args))

    async def cancel(self, task_id: uuid.UUID, now: float) -> Cancelled:
        """The task, and its unfinished descendants, in one transaction."""
        async with self.pg.transaction() as tx:
            found = await tx.fetch(sql.CANCEL, {"id": task_id, "now": as_datetime(now)})
            if found:
                tree = await pg_flows.cancel_tree(tx, [task_id], now)
                await pg_flows.finished(tx, [found[0][0], *(c.task for c in tree)], now)
        if not found:
            await self._explain_refusal(task_id, Event.CANCEL)
        return Cancelled(*found[0], descendants=tuple(tree))

    async def family(self, task: Task, queues: Sequence[str] | None = None) -> Family:
        return await pg_flows.family(self.pg, task, queues)

    async def retry(self, task_id: uuid.UUID, now: float) -> Task:
        """A dead-lettered task gets a fresh retry budget (see pg_sql)."""
        found = await self.pg.fetch(sql.RETRY, {"id": task_id, "now": as_datetime(now)})
        if not found:
            await self._explain_refusal(task_id, Event.RETRY)
        return found[0]

    async def _explain_refusal(self, task_id: uuid.UUID, event: Event) -> None:
        task = await self.get(task_id, with_payload=False)
        if task is None:
            raise DtqError.not_found("task", str(task_id))
        states.apply(task.state, event)  # raises FAILED_PRECONDITION
        raise DtqError.failed_precondition("CONCURRENT_UPDATE", "the task changed; try again")


def _created(since: float | None, until: float | None) -> dict[str, object]:
    """The time range, and the id range it implies: ids are UUIDv7s of the
    submission's clock, so the primary key (the listing's order) range-scans
    instead of filtering every newer row. An id is never older than its
    created_at (`ids.uuid7` only counts forward); it may be newer after the
    clock stepped back, which the slack on the upper bound allows for."""
    return {
        "since": as_datetime(since),
        "since_id": ids.floor(since - 0.001) if since is not None else None,
        "until": as_datetime(until),
        "until_id": ids.floor(until + ids.CLOCK_SLACK) if until is not None else None,
    }
