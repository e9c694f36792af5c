"""Retention: deletes COMPLETED and CANCELLED tasks some time after they finished
(`DTQ_RETENTION_COMPLETED`, 0 keeps them forever). Dead letters are never
deleted here: they stay until an operator re-queues or purges them.

A backlog goes in many small transactions (`BATCH` rows each), so retention
never holds long locks; `FOR UPDATE SKIP LOCKED` lets several managers run it.
"""

from __future__ import annotations

import asyncio
import logging

from dtq import metrics
from dtq.domain.errors import DtqError
from dtq.ports import Clock, TaskStore

log = logging.getLogger(__name__)
BATCH = 1000
PAUSE = 0.01  # seconds between two batches of a backlog: room for other writers


class Retention:
    def __init__(self, store: TaskStore, clock: Clock, max_age: float, interval: float) -> None:
        self.store = store
        self.clock = clock
        self.max_age = max_age
        self.interval = interval

    async def run(self) -> None:
        if self.max_age <= 0:
            log.info("retention_disabled")
            return
        while True:
            try:
                await self.tick()
            except DtqError as error:
                log.warning("retention_failed", extra={"reason": error.reason})
            await asyncio.sleep(self.interval)

    async def tick(self) -> int:
        """Delete every task past its age, batch by batch; returns how many."""
        before = self.clock.now() - self.max_age
        total = 0
        while True:
            deleted = await self.store.purge_finished(before, BATCH)
            metrics.tasks_purged.labels("retention").inc(deleted)
            total += deleted
            if deleted < BATCH:
                break
            await asyncio.sleep(PAUSE)
        if total:
            log.info("tasks_purged", extra={"count": total, "reason": "retention"})
        return total
