"""LimitStore on PostgreSQL: the `tenant_limits` and `dispatch_rates` tables,
and the queued count the cap is checked against."""

from __future__ import annotations

import json
import time

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_rows import as_datetime
from dtq.domain.limits import DispatchRate, TenantLimits


class PgLimits:
    """PostgreSQL implementation of `LimitStore`."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def tenant_limits(self) -> list[TenantLimits]:
        return await self.pg.fetch(sql.TENANT_LIMITS)

    async def set_tenant_limits(self, limits: TenantLimits) -> TenantLimits:
        args = {
            "tenant": limits.tenant,
            "submit_rate": limits.submit_rate,
            "submit_burst": limits.submit_burst,
            "max_queued": limits.max_queued,
            "max_running": limits.max_running,
            "key_max_running": limits.key_max_running,
            "key_weights": json.dumps(dict(limits.key_weights)),
            "now": as_datetime(time.time()),
        }
        (stored,) = await self.pg.fetch(sql.SET_TENANT_LIMITS, args)
        return stored

    async def dispatch_rates(self) -> list[DispatchRate]:
        return await self.pg.fetch(sql.DISPATCH_RATES)

    async def set_dispatch_rate(self, rate: DispatchRate) -> DispatchRate:
        args = {
            "queue": rate.queue,
            "task_type": rate.task_type,
            "rate": rate.rate,
            "burst": rate.burst,
            "now": as_datetime(time.time()),
        }
        (stored,) = await self.pg.fetch(sql.SET_DISPATCH_RATE, args)
        return stored

    async def delete_dispatch_rate(self, queue: str, task_type: str) -> bool:
        args = {"queue": queue, "task_type": task_type}
        return bool(await self.pg.fetch(sql.DELETE_DISPATCH_RATE, args))

    async def count_queued(self, tenant: str) -> int:
        (n,) = await self.pg.fetch(sql.COUNT_QUEUED, {"tenant": tenant})
        return int(n)
