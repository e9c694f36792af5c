"""Dead letters and retention on PostgreSQL: re-queue, count, purge."""

from __future__ import annotations

import uuid
from typing import Any

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_rows import as_datetime
from dtq.domain.model import Task
from dtq.domain.tenants import DEFAULT

PURGE_BATCH = 1000  # rows deleted per transaction


def _dead(
    tenant: str, queue: str, task_type: str | None, after: uuid.UUID | None = None
) -> dict[str, Any]:
    """The arguments that pick the dead letters of the tenant's `queue` (of
    `task_type`, after `after`)."""
    return {"tenant": tenant, "queue": queue, "type": task_type or None, "after": after}


class PgDeadLetters:
    """Dead-letter and retention writes of `dtq.ports.TaskStore`."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def requeue_dead(
        self,
        queue: str,
        task_type: str | None,
        limit: int,
        now: float,
        after: uuid.UUID | None = None,
        tenant: str = DEFAULT,
    ) -> list[Task]:
        args = {**_dead(tenant, queue, task_type, after), "now": as_datetime(now), "limit": limit}
        return sorted(await self.pg.fetch(sql.REQUEUE_DEAD, args), key=lambda t: t.id)

    async def count_dead(self, queue: str, task_type: str | None, tenant: str = DEFAULT) -> int:
        (count,) = await self.pg.fetch(sql.COUNT_DEAD, _dead(tenant, queue, task_type))
        return int(count)

    async def purge_dead(self, queue: str, task_type: str | None, tenant: str = DEFAULT) -> int:
        """Oldest first, PURGE_BATCH rows per transaction; each row visited once."""
        total, after = 0, None
        while True:
            args = {**_dead(tenant, queue, task_type, after), "limit": PURGE_BATCH}
            ids = await self.pg.fetch(sql.PURGE_DEAD, args)
            total += len(ids)
            if len(ids) < PURGE_BATCH:
                return total
            after = max(ids)

    async def purge_finished(self, before: float, limit: int) -> int:
        args = {"before": as_datetime(before), "limit": limit}
        (count,) = await self.pg.fetch(sql.PURGE_FINISHED, args)
        return int(count)
