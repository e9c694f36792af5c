"""Use cases of workers and operators: registration, listing, stats, dead
letters, health."""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from dtq import metrics
from dtq.app import caller, task_metrics
from dtq.domain import paging, validation
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import QueueStats, Task, TaskState, WorkerInfo
from dtq.domain.tenants import DEFAULT, split_tenant_queue, tenant_queue
from dtq.ports import (
    Clock,
    DispatchQueue,
    QueueIndex,
    QueueSettings,
    Ready,
    TaskStore,
    WorkerRegistry,
)

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 2.0
WORKERS_RECENT = 600  # seconds: workers seen since then count against max_workers
REQUEUE_BATCH = 500  # dead letters moved (and indexed) per transaction


class Health(enum.IntEnum):
    HEALTHY = 1
    DEGRADED = 2
    UNHEALTHY = 3


@dataclass(frozen=True)
class Component:
    name: str
    status: Health
    latency: float
    message: str


@dataclass(frozen=True)
class SystemHealth:
    status: Health
    components: list[Component]
    active_workers: int
    checked_at: float


class WorkerStatus(enum.IntEnum):
    ACTIVE = 1
    DRAINING = 2
    LOST = 3


@dataclass
class Admin:
    """Worker registry, queue statistics, pause/resume, health."""

    store: TaskStore
    queue: DispatchQueue
    index: QueueIndex
    registry: WorkerRegistry
    clock: Clock
    heartbeat_interval: float = 10.0
    # Durable pause state; Redis keeps the copy the lease script reads.
    settings: QueueSettings | None = None
    # Called with the name of each queue deleted here (the queue cap forgets it).
    on_deleted: list[Callable[[str], None]] = field(default_factory=list)
    # Workers seen in the last WORKERS_RECENT seconds there may be; a new
    # registration past it is refused (TOO_MANY_WORKERS).
    max_workers: int = 10_000

    # -- workers --------------------------------------------------------------

    async def register(self, worker: WorkerInfo) -> WorkerInfo:
        validation.worker_details(worker)
        worker_id = worker.id or f"{worker.hostname or 'worker'}-{secrets.token_hex(4)}"
        validation.worker_id(worker_id)
        validation.address(worker.metrics_address, "metrics_address")
        if not worker.task_types:
            raise DtqError.invalid("task_types", "must name at least one task type")
        for queue in worker.queues:
            caller.check_queue(queue)
        now = self.clock.now()
        tenant = caller.current().home
        await self.room_for(worker_id, now, tenant)
        stored = replace(worker, id=worker_id, registered_at=now, last_seen_at=now, tenant=tenant)
        await self.registry.upsert(stored)
        return stored

    async def room_for(self, worker_id: str, now: float, tenant: str = DEFAULT) -> None:
        if await self.registry.get(worker_id, tenant) is not None:
            return  # a worker registering again
        if await self.registry.count_seen_since(now - WORKERS_RECENT) >= self.max_workers:
            raise DtqError(
                Code.RESOURCE_EXHAUSTED,
                "TOO_MANY_WORKERS",
                f"{self.max_workers} workers were seen in the last {WORKERS_RECENT // 60} "
                f"minutes, the most allowed (DTQ_MAX_WORKERS)",
            )

    def status(self, worker: WorkerInfo) -> WorkerStatus:
        if self.clock.now() - worker.last_seen_at > 3 * self.heartbeat_interval:
            return WorkerStatus.LOST
        return WorkerStatus.DRAINING if worker.draining else WorkerStatus.ACTIVE

    async def workers(self, page_size: int, token: str) -> tuple[list[WorkerInfo], str]:
        size = validation.page_size(page_size, default=100)
        fp = paging.fingerprint("workers")
        offset = paging.decode_offset(token, fp)
        page, total = await self.registry.page(offset, size, caller.current().view)
        more = offset + size < total
        return page, paging.encode(str(offset + size), fp) if more else ""

    # -- queues ---------------------------------------------------------------

    async def queue_stats(self, only: str = "") -> list[QueueStats]:
        """The queues the caller sees (of every tenant, for the operator
        scope), or its tenant's queue `only`."""
        principal = caller.current()
        if only:
            validation.queue_name(only)
            caller.check_queue(only)
            counts = await self.store.state_counts(only, principal.home)
            names = {tenant_queue(principal.home, only)}
        else:
            counts = await self.store.state_counts(None, principal.view)
            names = (await self.index.queues()) | {q for q, _ in counts}
            names = caller.visible_tenant_queues(names)
        stats = []
        for name in sorted(names):
            live = await self.index.stats(name)
            tenant, queue = split_tenant_queue(name)
            stats.append(
                replace(
                    live,
                    queue=queue,
                    tenant=tenant,
                    scheduled=counts.get((name, TaskState.SCHEDULED), 0),
                    retrying=counts.get((name, TaskState.FAILED), 0),
                    dead_lettered=counts.get((name, TaskState.DEAD_LETTERED), 0),
                )
            )
        return stats

    async def set_paused(self, queue: str, paused: bool) -> QueueStats:
        name = validation.queue_name(queue)
        if not queue:
            raise DtqError.invalid("queue", "is required")
        caller.check_queue(name)
        tenant = caller.current().home
        if self.settings is not None:
            # PostgreSQL first: it is the truth
            await self.settings.set_paused(name, paused, tenant)
        await self.index.set_paused(tenant_queue(tenant, name), paused)
        (stats,) = await self.queue_stats(name)
        return stats

    async def delete_queue(self, queue: str) -> None:
        """Forget an empty queue (see DeleteQueue). The name goes first, then
        the queue is looked at again: a task indexed meanwhile puts it back
        (its own submission re-adds the name too), so no queue with work in
        it stays unknown to the reaper and the stats."""
        name = validation.queue_name(queue)
        if not queue:
            raise DtqError.invalid("queue", "is required")
        caller.check_queue(name)
        tenant = caller.current().home
        indexed = tenant_queue(tenant, name)
        await self._refuse_unless_empty(name)
        await self.index.remove(indexed)
        try:
            await self._refuse_unless_empty(name)
        except DtqError:
            await self.index.add([indexed])
            raise
        if self.settings is not None:
            await self.settings.delete(name, tenant)
        for callback in self.on_deleted:
            callback(indexed)
        log.info("queue_deleted", extra={"queue": name, "tenant": tenant})

    async def _refuse_unless_empty(self, queue: str) -> None:
        (stats,) = await self.queue_stats(queue)
        held = {
            "pending": sum(stats.pending_by_priority.values()),
            "running": stats.running,
            "scheduled": stats.scheduled,
            "retrying": stats.retrying,
            "dead-lettered": stats.dead_lettered,
        }
        if any(held.values()):
            counts = ", ".join(f"{n} {state}" for state, n in held.items() if n)
            raise DtqError(
                Code.FAILED_PRECONDITION,
                "QUEUE_NOT_EMPTY",
                f"queue {queue!r} holds tasks ({counts}): only an empty queue can be deleted",
            )

    # -- dead letters ---------------------------------------------------------

    async def requeue_dead_letters(self, queue: str, task_type: str, limit: int) -> int:
        """DEAD_LETTERED -> PENDING with a fresh retry budget, oldest first,
        `limit` at most (0: all), batch by batch, each indexed in Redis at once.
        Every task is visited once, so a task that dies again meanwhile waits
        for the next call."""
        name, only = _dead_letter_filter(queue, task_type)
        if limit < 0:
            raise DtqError.invalid("limit", "must not be negative")
        total = 0
        after: uuid.UUID | None = None  # keyset: each task visited once
        while limit == 0 or total < limit:
            want = REQUEUE_BATCH if limit == 0 else min(REQUEUE_BATCH, limit - total)
            batch = await self.store.requeue_dead(
                name, only, want, self.clock.now(), after, caller.current().home
            )
            total += len(batch)
            task_metrics.retried(batch, "operator")
            if batch:
                await self._index(batch)
                after = batch[-1].id
            if len(batch) < want:
                break
        log.info("dead_letters_requeued", extra={"queue": name, "count": total})
        return total

    async def _index(self, batch: Sequence[Task]) -> None:
        try:
            await self.queue.enqueue([Ready.of(t) for t in batch])
            await self.queue.publish_changes(batch)
        except DtqError as error:  # committed: the manager's reconciler indexes them
            log.warning("index_deferred", extra={"tasks": len(batch), "reason": error.reason})

    async def purge_dead_letters(
        self, queue: str, task_type: str, confirm: bool, validate_only: bool = False
    ) -> int:
        """Delete dead letters for good (`confirm` required); with
        `validate_only`, count them instead."""
        name, only = _dead_letter_filter(queue, task_type)
        if validate_only:
            return await self.store.count_dead(name, only, caller.current().home)
        if not confirm:
            raise DtqError.invalid(
                "confirm", "must be true: purged tasks cannot be restored", "CONFIRMATION_REQUIRED"
            )
        purged = await self.store.purge_dead(name, only, caller.current().home)
        metrics.tasks_purged.labels("dead_letter_purge").inc(purged)
        log.info("dead_letters_purged", extra={"queue": name, "count": purged})
        return purged

    # -- health ---------------------------------------------------------------

    async def health(self) -> SystemHealth:
        pg, redis = await asyncio.gather(
            _probe("postgres", self.store.ping), _probe("redis", self.queue.ping)
        )
        active = 0
        if redis.status == Health.HEALTHY:
            seen = self.clock.now() - 3 * self.heartbeat_interval  # as `status` counts
            active = await self.registry.count_seen_since(seen, caller.current().view)
        fleet = Component(
            "workers",
            Health.HEALTHY if active else Health.DEGRADED,
            0.0,
            f"{active} active worker(s)" if active else "no active worker",
        )
        components = [pg, redis, fleet]
        return SystemHealth(max(c.status for c in components), components, active, self.clock.now())


async def _probe(name: str, ping: Callable[[], Awaitable[None]]) -> Component:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(ping(), HEALTH_TIMEOUT)
    except (DtqError, TimeoutError) as error:
        return Component(
            name, Health.UNHEALTHY, time.perf_counter() - start, str(error) or "timeout"
        )
    return Component(name, Health.HEALTHY, time.perf_counter() - start, "ok")


def _dead_letter_filter(queue: str, task_type: str) -> tuple[str, str | None]:
    """The required queue and the optional task type of a dead-letter action."""
    if not queue:
        raise DtqError.invalid("queue", "is required")
    name = validation.queue_name(queue)
    caller.check_queue(name)
    return name, validation.task_type(task_type, "task_type") if task_type else None
