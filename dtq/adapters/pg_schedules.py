"""Recurring schedules in PostgreSQL (the `schedules` table)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_rows import as_datetime, schedule_row
from dtq.domain.errors import Code, DtqError
from dtq.domain.schedule import Schedule
from dtq.ports import Fired


class PgSchedules:
    """`dtq.ports.ScheduleStore`: writes of operators notify the managers."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def create(self, schedule: Schedule) -> Schedule:
        found = await self.pg.fetch(sql.CREATE_SCHEDULE, schedule_row(schedule))
        if not found:
            raise DtqError(
                Code.ALREADY_EXISTS,
                "SCHEDULE_EXISTS",
                f"a schedule named {schedule.name!r} exists (update or delete it)",
            )
        return found[0]

    async def get(self, name: str) -> Schedule | None:
        found = await self.pg.fetch(sql.GET_SCHEDULE, {"name": name})
        return found[0] if found else None

    async def list_schedules(self, after: str | None, limit: int) -> list[Schedule]:
        return await self.pg.fetch(sql.LIST_SCHEDULES, {"after": after, "limit": limit})

    async def update(self, schedule: Schedule, retime: bool) -> Schedule | None:
        args = {**schedule_row(schedule), "retime": retime}
        found = await self.pg.fetch(sql.UPDATE_SCHEDULE, args)
        return found[0] if found else None

    async def delete(self, name: str) -> bool:
        return bool(await self.pg.fetch(sql.DELETE_SCHEDULE, {"name": name}))

    async def record_run(self, name: str, at: float, task_id: uuid.UUID) -> None:
        args = {"name": name, "at": as_datetime(at), "id": task_id}
        await self.pg.fetch(sql.SCHEDULE_RAN, args)

    async def fire_due(
        self, now: float, limit: int, fire: Callable[[Schedule], Awaitable[Fired]]
    ) -> int:
        """Lock up to `limit` due schedules (skipping those another manager
        holds), `fire` each, record what it left, commit."""
        async with self.pg.transaction() as tx:
            due = await tx.fetch(sql.LOCK_DUE_SCHEDULES, {"now": as_datetime(now), "limit": limit})
            for schedule in due:
                fired = await fire(schedule)
                args = {
                    "name": schedule.name,
                    "next": as_datetime(fired.next_fire_at),
                    "last_at": as_datetime(fired.last_fire_at),
                    "last_id": fired.last_task_id,
                }
                await tx.fetch(sql.SCHEDULE_FIRED, args)
        return len(due)

    async def next_due(self) -> float | None:
        (due,) = await self.pg.fetch(sql.NEXT_SCHEDULE)
        return None if due is None else float(due.timestamp())
