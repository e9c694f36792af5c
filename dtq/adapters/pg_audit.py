"""The audit log in PostgreSQL (the `audit_events` table)."""

from __future__ import annotations

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_rows import as_datetime
from dtq.domain.audit import AuditEvent


class PgAuditLog:
    """`dtq.ports.AuditLog`: events appended, read newest first."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def add(self, event: AuditEvent) -> None:
        row = {
            "at": as_datetime(event.at),
            "actor": event.actor,
            "role": event.role,
            "action": event.action,
            "target": event.target,
            "outcome": event.outcome,
            "detail": event.detail,
            "tenant": event.tenant,
        }
        await self.pg.fetch(sql.ADD_AUDIT_EVENT, row)

    async def page(
        self,
        since: float | None,
        actor: str | None,
        before_id: int | None,
        limit: int,
        tenant: str | None = None,
    ) -> list[AuditEvent]:
        args = {"since": as_datetime(since), "actor": actor or None, "before": before_id}
        args["tenant"] = tenant
        return await self.pg.fetch(sql.AUDIT_PAGE, {**args, "limit": limit})
