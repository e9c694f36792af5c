"""Reclaims expired leases: their tasks go back to the queue (or, when every
attempt is spent, to the dead letter queue). Redis hands each expired lease to
exactly one reaper, so several managers can run at once."""

from __future__ import annotations

import asyncio
import logging

from dtq import metrics
from dtq.app.leasing import Leasing
from dtq.domain.errors import DtqError
from dtq.ports import QueueIndex

log = logging.getLogger(__name__)
BATCH = 1000


class Reaper:
    def __init__(self, leasing: Leasing, index: QueueIndex, interval: float = 1.0) -> None:
        self.leasing = leasing
        self.index = index
        self.interval = interval

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except DtqError as error:
                log.warning("reap_failed", extra={"reason": error.reason})
            await asyncio.sleep(self.interval)

    async def tick(self) -> int:
        total = 0
        for queue in sorted(await self.index.queues()):
            while True:
                claimed, expired = await self.leasing.reap(queue, BATCH)
                # Only leases of tasks still RUNNING expired; the others had
                # finished and their leases were merely left behind.
                metrics.leases_expired.labels(metrics.queue_label(queue)).inc(expired)
                total += expired
                if claimed < BATCH:
                    break
        return total
