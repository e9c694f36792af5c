"""Promotes scheduled tasks and retries to PENDING when their time comes.

PostgreSQL holds the schedule (`scheduled_at` of SCHEDULED and FAILED tasks,
indexed); the scheduler sleeps exactly until the next due time, and is woken
early through Redis when an earlier task is submitted. Several managers may
run: `FOR UPDATE SKIP LOCKED` hands each due task to exactly one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from dtq import metrics
from dtq.domain.errors import DtqError
from dtq.ports import Clock, DispatchQueue, Ready, TaskStore

log = logging.getLogger(__name__)
BATCH = 1000
MAX_SLEEP = 1.0  # re-read the schedule at least this often (a missed wake-up costs at most this)


class Scheduler:
    def __init__(self, store: TaskStore, queue: DispatchQueue, clock: Clock) -> None:
        self.store = store
        self.queue = queue
        self.clock = clock
        self._wake = asyncio.Event()
        self._next = float("inf")

    def wake(self, due: float) -> None:
        """A task became due at `due`: wake up if that is earlier than planned."""
        if due < self._next:
            self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                delay = await self.tick()
            except DtqError as error:
                log.warning("schedule_failed", extra={"reason": error.reason})
                delay = MAX_SLEEP
            self._next = self.clock.now() + delay
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def tick(self) -> float:
        """Promote what is due; return how long to sleep."""
        while True:
            promoted = await self.store.promote_due(self.clock.now(), BATCH)
            if promoted:
                await self.queue.enqueue([Ready.of(t) for t in promoted])
                await self.queue.publish_changes(promoted)
                for queue, n in Counter(t.tenant_queue for t in promoted).items():
                    metrics.tasks_promoted.labels(metrics.queue_label(queue)).inc(n)
                log.info("tasks_promoted", extra={"count": len(promoted)})
            if len(promoted) < BATCH:
                break
        due = await self.store.next_due()
        if due is None:
            return MAX_SLEEP
        return max(0.0, min(MAX_SLEEP, due - self.clock.now()))
