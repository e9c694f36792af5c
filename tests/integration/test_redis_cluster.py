"""The contracts of the Redis adapters (dispatch queue, index, registry,
notifications), run again against a local Redis Cluster: 3 masters with a
replica each, started once for the session (tests/conftest.py)."""

from __future__ import annotations

import asyncio

import pytest

from dtq.adapters import redis_keys as keys
from dtq.dev.cluster import RedisCluster
from dtq.domain.model import LeaseRef, Task, TaskState
from dtq.ports import Ready
from tests.integration.helpers import async_test, ready, redis_queue, token
from tests.integration.test_redis_notify import *  # noqa: F403 (the same tests, on the cluster)
from tests.integration.test_redis_queue import *  # noqa: F403


@pytest.fixture(scope="module")
def redis_url(redis_cluster: RedisCluster) -> str:
    """The cluster instead of the session's Redis db, for every test here."""
    return redis_cluster.url


@async_test
async def test_pipelines_reload_scripts_a_node_lost(redis_url: str) -> None:
    """A promoted replica or a restarted node has no scripts: a cluster
    pipeline then fails with NOSCRIPT, and the adapter loads them and runs it again."""
    async with redis_queue(redis_url) as q:
        await q.redis.script_flush()  # on every master
        first, second = ready(queue="a"), ready(queue="b")
        await q.enqueue([first, second])
        popped = [
            r.id for queue in ("a", "b") for r in (await q.lease(queue, ("t",), [token()], 30))[0]
        ]
    assert popped == [first.id, second.id]


@async_test
async def test_a_cancel_cascade_across_masters(redis_url: str, redis_cluster: RedisCluster) -> None:
    """A cancelled tree's Redis calls as Tasks.cancel makes them (concurrently):
    the running descendants' leases dropped and their workers told, the pending
    ones unindexed, their new states published, over queues on different masters."""
    queues = [f"cascade-{i}" for i in range(12)]
    assert len({redis_cluster.master_of(keys.leases(n)).url for n in queues}) > 1
    async with redis_queue(redis_url) as q:
        running, pending = [ready(queue=n) for n in queues], [ready(queue=n) for n in queues]
        await q.enqueue(running)
        tokens = {n: token() for n in queues}
        leased = [(await q.lease(n, ("t",), [tokens[n]], 30))[0] for n in queues]
        assert leased == [[r] for r in running]
        await q.enqueue(pending)

        def task(r: Ready, state: TaskState) -> Task:
            return Task(
                r.id, r.type, r.queue, r.priority, state, 1, 3, 60.0, 30.0, 0.0, 0.0,
                worker_id="w-1",
            )  # fmt: skip

        async def stop(r: Ready) -> None:
            await q.drop_leases(r.queue, [LeaseRef(r.id, tokens[r.queue])])
            await q.publish_cancel(task(r, TaskState.RUNNING))

        await asyncio.gather(*(stop(r) for r in running))
        await asyncio.gather(*(q.remove_ready(task(r, TaskState.PENDING)) for r in pending))
        await q.publish_changes([task(r, TaskState.CANCELLED) for r in running + pending])
        for n in queues:
            assert await q.redis.zcard(keys.leases(n)) == 0
            assert (await q.lease(n, ("t",), [token()], 30))[0] == []
