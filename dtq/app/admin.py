"""Use cases of workers and operators: registration, listing, stats, health."""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from dtq.domain import paging, validation
from dtq.domain.errors import DtqError
from dtq.domain.model import QueueStats, TaskState, WorkerInfo
from dtq.ports import Clock, DispatchQueue, QueueSettings, TaskStore, WorkerRegistry

HEALTH_TIMEOUT = 2.0


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
    registry: WorkerRegistry
    clock: Clock
    heartbeat_interval: float = 10.0
    # Durable pause state; Redis keeps the copy the lease script reads.
    settings: QueueSettings | None = None

    # -- workers --------------------------------------------------------------

    async def register(self, worker: WorkerInfo) -> WorkerInfo:
        worker_id = worker.id or f"{worker.hostname or 'worker'}-{secrets.token_hex(4)}"
        validation.worker_id(worker_id)
        if not worker.task_types:
            raise DtqError.invalid("task_types", "must name at least one task type")
        now = self.clock.now()
        stored = replace(worker, id=worker_id, registered_at=now, last_seen_at=now)
        await self.registry.upsert(stored)
        return stored

    def status(self, worker: WorkerInfo) -> WorkerStatus:
        if self.clock.now() - worker.last_seen_at > 3 * self.heartbeat_interval:
            return WorkerStatus.LOST
        return WorkerStatus.DRAINING if worker.draining else WorkerStatus.ACTIVE

    async def workers(self, page_size: int, token: str) -> tuple[list[WorkerInfo], str]:
        size = validation.page_size(page_size, default=100)
        fp = paging.fingerprint("workers")
        offset = int(paging.decode(token, fp) or 0)
        everyone = await self.registry.list_workers()
        page = everyone[offset : offset + size]
        more = offset + size < len(everyone)
        return page, paging.encode(str(offset + size), fp) if more else ""

    # -- queues ---------------------------------------------------------------

    async def queue_stats(self, only: str = "") -> list[QueueStats]:
        if only:
            validation.queue_name(only)
        counts = await self.store.state_counts(only or None)
        names = {only} if only else (await self.queue.queues()) | {q for q, _ in counts}
        stats = []
        for name in sorted(names):
            live = await self.queue.stats(name)
            stats.append(
                replace(
                    live,
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
        if self.settings is not None:
            await self.settings.set_paused(name, paused)  # PostgreSQL first: it is the truth
        await self.queue.set_paused(name, paused)
        (stats,) = await self.queue_stats(name)
        return stats

    # -- health ---------------------------------------------------------------

    async def health(self) -> SystemHealth:
        pg, redis = await asyncio.gather(
            _probe("postgres", self.store.ping), _probe("redis", self.queue.ping)
        )
        active = 0
        if redis.status == Health.HEALTHY:
            workers = await self.registry.list_workers()
            active = sum(1 for w in workers if self.status(w) != WorkerStatus.LOST)
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
