"""What the queue manager polls PostgreSQL for: due tasks, and open tasks to
reconcile with Redis."""

from __future__ import annotations

import uuid

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_rows import as_datetime, as_seconds
from dtq.domain.model import Task


class PgPoll:
    """`promote_due`, `next_due` and `scan_open` of `dtq.ports.TaskStore`."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def promote_due(self, now: float, limit: int) -> list[Task]:
        return await self.pg.fetch(sql.PROMOTE_DUE, {"now": as_datetime(now), "limit": limit})

    async def next_due(self) -> float | None:
        (due,) = await self.pg.fetch(sql.NEXT_DUE)
        return as_seconds(due)

    async def scan_open(self, after: uuid.UUID | None, limit: int) -> list[Task]:
        """PENDING and RUNNING tasks in id order, after `after` (keyset)."""
        return await self.pg.fetch(sql.SCAN_OPEN, {"after": after, "limit": limit})
