"""Redis rebuilt from PostgreSQL: after FLUSHALL nothing accepted is lost."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import redis

from dtq.adapters.pg_queues import PgQueues
from dtq.adapters.redis_index import RedisIndex
from dtq.adapters.redis_workers import RedisWorkers
from dtq.app.admin import Admin
from dtq.app.leasing import Leasing
from dtq.domain.model import LeaseRef, NewTask, Subscription, TaskState
from dtq.domain.retry import RetryPolicy
from dtq.manager.reconciler import Reconciler
from dtq.ports import Ready, SystemClock
from tests.integration.helpers import async_test, new_task, pg_store, redis_queue

SUB = Subscription(("default",), ("email.send",))


def flush(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


@async_test
async def test_pending_running_and_paused_state_come_back_after_flushall(
    pg_url: str, redis_url: str, clean: None
) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        leasing = Leasing(store, queue, SystemClock(), RetryPolicy())
        settings = PgQueues(store.pg)
        tasks = [new_task(queue="default") for _ in range(5)]
        await store.insert(tasks, time.time())
        await leasing.queue.enqueue([_ready(t) for t in tasks])
        ((lease,),) = await leasing.grant_many(SUB, "default", [("w1", 1)])
        await settings.set_paused("default", True)
        await RedisIndex(queue.calls).set_paused("default", True)

        flush(redis_url)
        assert (await RedisIndex(queue.calls).stats("default")).pending == 0
        restored = await Reconciler(store, queue, RedisIndex(queue.calls), settings).reconcile(
            "test"
        )

        assert restored == {"ready": 4, "leases": 1, "paused": 1}
        stats = await RedisIndex(queue.calls).stats("default")
        assert (stats.pending, stats.running, stats.paused) == (4, 1, True)
        # The running task's worker keeps its lease: a heartbeat extends it.
        ref = LeaseRef(lease.task.id, lease.token)
        (deadline,) = await leasing.extend("default", [(ref, 30.0)])
        assert deadline is not None
        assert await RedisIndex(queue.calls).epoch() is not None


@async_test
async def test_reconcile_is_idempotent(pg_url: str, redis_url: str, clean: None) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        tasks = [new_task(queue="default") for _ in range(3)]
        await store.insert(tasks, time.time())
        reconciler = Reconciler(store, queue, RedisIndex(queue.calls), PgQueues(store.pg))
        first = await reconciler.reconcile("test")
        second = await reconciler.reconcile("test")
        assert first["ready"] == 3
        assert second == {"ready": 0, "leases": 0, "paused": 0}
        assert (await RedisIndex(queue.calls).stats("default")).pending == 3


@async_test
async def test_heartbeat_recreates_a_lease_redis_lost(
    pg_url: str, redis_url: str, clean: None
) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        leasing = Leasing(store, queue, SystemClock(), RetryPolicy())
        task = new_task(queue="default")
        await store.insert([task], time.time())
        await queue.enqueue([_ready(task)])
        ((lease,),) = await leasing.grant_many(SUB, "default", [("w1", 1)])
        flush(redis_url)
        good = LeaseRef(task.id, lease.token)
        forged = LeaseRef(task.id, "0" * 32)
        deadlines = await leasing.extend("default", [(good, 30.0), (forged, 30.0)])
        assert deadlines[0] is not None and deadlines[1] is None
        current = await store.get(task.id)
        assert current is not None and current.state == TaskState.RUNNING


def _ready(task: NewTask) -> Ready:
    return Ready(task.id, task.queue, task.type, task.priority)


class ResumedWhileReading:
    """PostgreSQL's queue settings, with an operator's resume landing right
    after the reconciler's first read of them (the race it used to lose)."""

    def __init__(self, settings: PgQueues, resume: Callable[[], Awaitable[object]]) -> None:
        self.settings, self.resume, self.reads = settings, resume, 0

    async def paused(self) -> dict[str, bool]:
        seen = await self.settings.paused()
        self.reads += 1
        if self.reads == 1:
            await self.resume()
        return seen

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self.settings.set_paused(queue, paused)


@async_test
async def test_a_resume_during_a_reconcile_is_not_undone(
    pg_url: str, redis_url: str, clean: None
) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        index, settings = RedisIndex(queue.calls), PgQueues(store.pg)
        admin = Admin(store, queue, index, RedisWorkers(queue.calls), SystemClock(), 10.0, settings)
        await admin.set_paused("default", True)
        flush(redis_url)  # Redis lost its data: the next reconcile restores the flag

        racing = ResumedWhileReading(settings, lambda: admin.set_paused("default", False))
        await Reconciler(store, queue, index, racing).reconcile("test")

        assert racing.reads >= 2
        assert (await settings.paused())["default"] is False
        assert (await index.stats("default")).paused is False
