"""Dead letters and retention on PostgreSQL: re-queue, count, purge."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from dtq.adapters.pg_base import PgBase
from dtq.adapters.pg_rows import (
    _RETURNING_BASIC,
    S,
    _dt,
    to_task,
)
from dtq.domain import states
from dtq.domain.model import (
    Task,
)
from dtq.domain.states import Event

_REQUEUED = states.apply(S.DEAD_LETTERED, Event.RETRY).value
# What retention deletes: finished tasks, except dead letters, which stay until
# an operator re-queues or purges them.
_EXPIRABLE = ", ".join(f"'{s.value}'" for s in sorted(states.TERMINAL - {S.DEAD_LETTERED}))
PURGE_BATCH = 1000  # rows deleted per transaction
# Batches pick their rows with `id = ANY(ARRAY(SELECT ... LIMIT n FOR UPDATE SKIP
# LOCKED))`: an InitPlan run once. `id IN (SELECT ...)` may become a semi-join
# that rescans the locking subquery per row and so ignores the LIMIT.


def _dead_letters(
    queue: str, task_type: str | None, after: uuid.UUID | None
) -> tuple[str, dict[str, Any]]:
    """`SELECT id` of the dead letters of `queue` (of `task_type`, ids after `after`)."""
    where = [f"state = '{S.DEAD_LETTERED.value}'", "queue = :queue"]
    params: dict[str, Any] = {"queue": queue}
    if task_type:
        where.append("type = :type")
        params["type"] = task_type
    if after is not None:
        where.append("id > :after")
        params["after"] = after
    return "SELECT id FROM tasks WHERE " + " AND ".join(where), params


class PgDeadLetters(PgBase):
    """Dead-letter and retention writes of `dtq.ports.TaskStore`."""

    async def requeue_dead(
        self,
        queue: str,
        task_type: str | None,
        limit: int,
        now: float,
        after: uuid.UUID | None = None,
    ) -> list[Task]:
        return await self._run(self._requeue_dead, queue, task_type, limit, now, after)

    def _requeue_dead(
        self, queue: str, task_type: str | None, limit: int, now: float, after: uuid.UUID | None
    ) -> list[Task]:
        # The budget as in _retry: max_retries + 1 more attempts each.
        pick, params = _dead_letters(queue, task_type, after)
        sql = text(f"""
            UPDATE tasks t SET state = '{_REQUEUED}', scheduled_at = NULL,
                finished_at = NULL, updated_at = :now, max_retries = t.attempts + t.max_retries
            WHERE t.id = ANY(ARRAY({pick} ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED))
              AND t.state = '{S.DEAD_LETTERED.value}'
            RETURNING {_RETURNING_BASIC}""")
        with self.engine.connect() as conn:
            rows = conn.execute(sql, {**params, "now": _dt(now), "limit": limit}).all()
            conn.commit()
        return sorted((to_task(r) for r in rows), key=lambda t: t.id)

    async def count_dead(self, queue: str, task_type: str | None) -> int:
        return await self._run(self._count_dead, queue, task_type)

    def _count_dead(self, queue: str, task_type: str | None) -> int:
        pick, params = _dead_letters(queue, task_type, None)
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM ({pick}) d"), params).scalar_one())

    async def purge_dead(self, queue: str, task_type: str | None) -> int:
        return await self._run(self._purge_dead, queue, task_type)

    def _purge_dead(self, queue: str, task_type: str | None) -> int:
        """Oldest first, PURGE_BATCH rows per transaction; each row visited once."""
        total, after = 0, None
        while True:
            pick, params = _dead_letters(queue, task_type, after)
            sql = text(f"""
                DELETE FROM tasks t
                WHERE t.id = ANY(ARRAY({pick} ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED))
                  AND t.state = '{S.DEAD_LETTERED.value}'
                RETURNING t.id""")
            with self.engine.connect() as conn:
                ids = conn.execute(sql, {**params, "limit": PURGE_BATCH}).scalars().all()
                conn.commit()
            total += len(ids)
            if len(ids) < PURGE_BATCH:
                return total
            after = max(ids)

    async def purge_finished(self, before: float, limit: int) -> int:
        return await self._run(self._purge_finished, before, limit)

    def _purge_finished(self, before: float, limit: int) -> int:
        # Small transactions: a backlog is deleted by repeated calls, never one big DELETE.
        sql = text(f"""
            DELETE FROM tasks WHERE id = ANY(ARRAY(
                SELECT id FROM tasks WHERE state IN ({_EXPIRABLE}) AND finished_at < :before
                LIMIT :limit FOR UPDATE SKIP LOCKED))""")
        with self.engine.connect() as conn:
            deleted = conn.execute(sql, {"before": _dt(before), "limit": limit}).rowcount
            conn.commit()
        return int(deleted)
