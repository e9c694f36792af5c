"""Redis rebuilt from PostgreSQL: after FLUSHALL nothing accepted is lost."""

from __future__ import annotations

import time

import redis

from dtq.adapters.pg_queues import PgQueues
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
        settings = PgQueues(store)
        tasks = [new_task(queue="default") for _ in range(5)]
        await store.insert(tasks, time.time())
        await leasing.queue.enqueue([_ready(t) for t in tasks])
        (lease,) = await leasing.grant("w1", SUB, "default", 1)
        await settings.set_paused("default", True)
        await queue.set_paused("default", True)

        flush(redis_url)
        assert (await queue.stats("default")).pending == 0
        restored = await Reconciler(store, queue, settings).reconcile("test")

        assert restored == {"ready": 4, "leases": 1, "paused": 1}
        stats = await queue.stats("default")
        assert (stats.pending, stats.running, stats.paused) == (4, 1, True)
        # The running task's worker keeps its lease: a heartbeat extends it.
        ref = LeaseRef(lease.task.id, lease.token)
        (deadline,) = await leasing.extend("default", [(ref, 30.0)])
        assert deadline is not None
        assert await queue.epoch() is not None


@async_test
async def test_reconcile_is_idempotent(pg_url: str, redis_url: str, clean: None) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        tasks = [new_task(queue="default") for _ in range(3)]
        await store.insert(tasks, time.time())
        reconciler = Reconciler(store, queue, PgQueues(store))
        first = await reconciler.reconcile("test")
        second = await reconciler.reconcile("test")
        assert first["ready"] == 3
        assert second == {"ready": 0, "leases": 0, "paused": 0}
        assert (await queue.stats("default")).pending == 3


@async_test
async def test_heartbeat_recreates_a_lease_redis_lost(
    pg_url: str, redis_url: str, clean: None
) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        leasing = Leasing(store, queue, SystemClock(), RetryPolicy())
        task = new_task(queue="default")
        await store.insert([task], time.time())
        await queue.enqueue([_ready(task)])
        (lease,) = await leasing.grant("w1", SUB, "default", 1)
        flush(redis_url)
        good = LeaseRef(task.id, lease.token)
        forged = LeaseRef(task.id, "0" * 32)
        deadlines = await leasing.extend("default", [(good, 30.0), (forged, 30.0)])
        assert deadlines[0] is not None and deadlines[1] is None
        current = await store.get(task.id)
        assert current is not None and current.state == TaskState.RUNNING


def _ready(task: NewTask) -> Ready:
    return Ready(task.id, task.queue, task.type, task.priority)
