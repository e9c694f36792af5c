"""Exports queue depths as gauges, so dashboards and alerts see every queue
(depth by priority, running, scheduled, retrying, dead-lettered, oldest age)."""

from __future__ import annotations

import asyncio
import logging

from dtq import metrics
from dtq.app.admin import Admin
from dtq.domain.errors import DtqError

log = logging.getLogger(__name__)


class QueueObserver:
    def __init__(self, admin: Admin, interval: float = 5.0) -> None:
        self.admin = admin
        self.interval = interval

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except DtqError as error:
                log.warning("observe_failed", extra={"reason": error.reason})
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        for stats in await self.admin.queue_stats():
            q = stats.queue
            for priority, depth in stats.pending_by_priority.items():
                name = priority.name.lower()
                metrics.queue_depth.labels(q, name).set(depth)
                age = stats.oldest_age_by_priority.get(priority, 0.0)
                metrics.queue_oldest_age.labels(q, name).set(age)
            for state, n in (
                ("running", stats.running),
                ("scheduled", stats.scheduled),
                ("retrying", stats.retrying),
                ("dead_lettered", stats.dead_lettered),
            ):
                metrics.queue_tasks.labels(q, state).set(n)
            metrics.queue_paused.labels(q).set(int(stats.paused))
