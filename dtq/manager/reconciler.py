"""Makes Redis agree with PostgreSQL, the source of truth.

Redis is an index: PENDING tasks in the ready ZSETs, RUNNING tasks' leases,
paused queues. It can lose all of it (FLUSHALL, a restart without persistence)
or miss writes (tasks accepted while it was down). The reconciler rebuilds what
is missing, idempotently (ZADD NX), so two managers may run it at once:
- at start;
- as soon as Redis comes back after being unreachable;
- as soon as the epoch marker is gone (Redis lost its data);
- every `interval` seconds anyway.
A task indexed twice is harmless: leasing is a compare-and-set in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from dtq import metrics
from dtq.domain.errors import DtqError
from dtq.domain.model import LeaseRef, Task, TaskState
from dtq.ports import DispatchQueue, QueueIndex, QueueSettings, TaskStore

log = logging.getLogger(__name__)
BATCH = 5000
CHECK_EVERY = 0.5  # how often the epoch marker is looked at
PAUSE_PASSES = 5  # re-reads of the pause flags while operators change them


class Reconciler:
    def __init__(
        self,
        store: TaskStore,
        queue: DispatchQueue,
        index: QueueIndex,
        settings: QueueSettings,
        interval: float = 300.0,
    ) -> None:
        self.store = store
        self.queue = queue
        self.index = index
        self.settings = settings
        self.interval = interval

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = 0.0  # reconcile at start
        while True:
            try:
                epoch = await self.index.epoch()
                if epoch is None or loop.time() >= due:
                    await self.reconcile(reason="data_lost" if epoch is None else "periodic")
                    due = loop.time() + self.interval
            except DtqError as error:
                # Unreachable: reconcile as soon as it answers again (tasks may
                # have been accepted meanwhile without being indexed).
                log.warning("reconcile_waiting", extra={"reason": error.reason})
                due = 0.0
            await asyncio.sleep(CHECK_EVERY)

    async def reconcile(self, reason: str) -> dict[str, int]:
        """One full pass; returns counts of what was restored."""
        restored = {"ready": 0, "leases": 0, "paused": 0}
        restored["paused"] = await self._pauses()
        after: uuid.UUID | None = None
        while True:
            batch = await self.store.scan_open(after, BATCH)
            if not batch:
                break
            after = batch[-1].id
            pending = [t for t in batch if t.state == TaskState.PENDING]
            restored["ready"] += await self.index.restore_ready(pending)
            restored["leases"] += await self._leases(
                [t for t in batch if t.state == TaskState.RUNNING]
            )
        await self.index.set_epoch(uuid.uuid4().hex)
        for kind, n in restored.items():
            metrics.reconciled.labels(kind).inc(n)
        level = logging.WARNING if any(restored.values()) else logging.INFO
        log.log(level, "index_reconciled", extra={"trigger": reason, **restored})
        return restored

    async def _leases(self, running: list[Task]) -> int:
        if not running:
            return 0
        now = await self.queue.now()
        items = [
            (t.tenant_queue, LeaseRef(t.id, t.lease_token), now + t.lease_duration, t.fairness_key)
            for t in running
            if t.lease_token
        ]
        return await self.queue.restore_leases(items)

    async def _pauses(self) -> int:
        """Redis's pause flags from PostgreSQL's. An operator's pause or resume
        writes PostgreSQL, then Redis; one that lands between our read and our
        write would be undone, so PostgreSQL is read again after writing and
        any flag that moved meanwhile is written again."""
        changed = 0
        truth = await self.settings.paused()
        for _ in range(PAUSE_PASSES):
            stale = [(q, p) for q, p in truth.items() if (await self.index.stats(q)).paused != p]
            for queue, paused in stale:
                await self.index.set_paused(queue, paused)
            changed += len(stale)
            again = await self.settings.paused() if stale else truth
            if again == truth:
                break
            truth = again
        return changed
