"""Durable queue settings in PostgreSQL (the `queues` table)."""

from __future__ import annotations

import time

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_rows import as_datetime
from dtq.domain.tenants import DEFAULT


class PgQueues:
    """Which queues are paused."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def set_paused(self, queue: str, paused: bool, tenant: str = DEFAULT) -> None:
        args = {"tenant": tenant, "name": queue, "paused": paused, "now": as_datetime(time.time())}
        await self.pg.fetch(sql.SET_PAUSED, args)

    async def paused(self) -> dict[str, bool]:
        """Every queue with a stored setting (as `tenant_queue` names), and
        whether it is paused."""
        return dict(await self.pg.fetch(sql.PAUSED))

    async def delete(self, queue: str, tenant: str = DEFAULT) -> None:
        await self.pg.fetch(sql.DELETE_QUEUE, {"tenant": tenant, "name": queue})
