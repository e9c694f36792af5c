"""Exports queue depths as gauges, so dashboards and alerts see every queue
(depth by priority, running, scheduled, retrying, dead-lettered, oldest age).
A queue of a tenant other than `default` is labelled `tenant/queue`."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from dtq import metrics
from dtq.app.admin import Admin
from dtq.domain.errors import DtqError
from dtq.domain.tenants import tenant_queue

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
        """Set every gauge; queues past the label cap add up under `_other`
        (their oldest age is the oldest of them)."""
        depth: dict[tuple[str, str], float] = defaultdict(float)
        age: dict[tuple[str, str], float] = defaultdict(float)
        tasks: dict[tuple[str, str], float] = defaultdict(float)
        paused: dict[str, int] = defaultdict(int)
        for stats in await self.admin.queue_stats():
            q = metrics.queue_label(tenant_queue(stats.tenant, stats.queue))
            for priority, n in stats.pending_by_priority.items():
                key = (q, priority.name.lower())
                depth[key] += n
                age[key] = max(age[key], stats.oldest_age_by_priority.get(priority, 0.0))
            for state, n in (
                ("running", stats.running),
                ("scheduled", stats.scheduled),
                ("retrying", stats.retrying),
                ("dead_lettered", stats.dead_lettered),
            ):
                tasks[(q, state)] += n
            paused[q] = max(paused[q], int(stats.paused))
        for gauge, values in (
            (metrics.queue_depth, depth),
            (metrics.queue_oldest_age, age),
            (metrics.queue_tasks, tasks),
        ):
            for labels, value in values.items():
                gauge.labels(*labels).set(value)
        for q, flag in paused.items():
            metrics.queue_paused.labels(q).set(flag)
