"""Tenants in PostgreSQL (the `tenants` table)."""

from __future__ import annotations

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_rows import as_datetime
from dtq.domain.tenants import Tenant


class PgTenants:
    """`dtq.ports.Tenants`."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def add(self, tenant: Tenant) -> bool:
        args = {"name": tenant.name, "weight": tenant.weight, "now": as_datetime(tenant.created_at)}
        return bool(await self.pg.fetch(sql.ADD_TENANT, args))

    async def get(self, name: str) -> Tenant | None:
        found = await self.pg.fetch(sql.GET_TENANT, {"name": name})
        return found[0] if found else None

    async def list_all(self) -> list[Tenant]:
        return await self.pg.fetch(sql.LIST_TENANTS)
