"""Durable queue settings in PostgreSQL (the `queues` table)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from dtq.adapters.pg_store import PgStore
from dtq.adapters.pg_tables import queues


class PgQueues:
    """Which queues are paused; shares the task store's pool and breaker."""

    def __init__(self, store: PgStore) -> None:
        self.store = store

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self.store._run(self._set_paused, queue, paused)

    def _set_paused(self, queue: str, paused: bool) -> None:
        stmt = insert(queues).values(name=queue, paused=paused, updated_at=datetime.now(UTC))
        stmt = stmt.on_conflict_do_update(
            index_elements=[queues.c.name],
            set_={"paused": stmt.excluded.paused, "updated_at": stmt.excluded.updated_at},
        )
        with self.store.engine.begin() as conn:
            conn.execute(stmt)

    async def paused(self) -> dict[str, bool]:
        """Every queue with a stored setting, and whether it is paused."""
        return await self.store._run(self._paused)

    def _paused(self) -> dict[str, bool]:
        with self.store.engine.connect() as conn:
            return {name: p for name, p in conn.execute(select(queues.c.name, queues.c.paused))}
