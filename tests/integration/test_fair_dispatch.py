"""Fair dispatch on a real Redis: enqueue.lua and lease.lua take ready tasks
round-robin between fairness keys, priorities first, in one hash tag."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from dtq.adapters import redis_keys as keys
from dtq.adapters.pg_queues import PgQueues
from dtq.adapters.redis_index import RedisIndex
from dtq.adapters.redis_queue import RedisQueue
from dtq.domain.model import Priority, Task, TaskState
from dtq.manager.reconciler import Reconciler
from dtq.ports import Ready
from tests.integration.helpers import async_test, new_task, pg_store, redis_queue, token

pytestmark = pytest.mark.usefixtures("clean")
H, M, L = Priority.HIGH, Priority.MEDIUM, Priority.LOW


def keyed(key: str, priority: Priority = M, task_type: str = "t") -> Ready:
    return Ready(uuid.uuid4(), "q", task_type, priority, key)


async def lease_keys(q: RedisQueue, n: int, by_id: dict[uuid.UUID, str]) -> list[str]:
    """Lease up to n tasks; the fairness key of each, in lease order."""
    popped, _ = await q.lease("q", ("t",), [token() for _ in range(n)], 30.0)
    return [by_id[r.id] for r in popped]


def index(*groups: list[Ready]) -> dict[uuid.UUID, str]:
    return {r.id: r.fairness_key for g in groups for r in g}


@async_test
async def test_keys_take_turns(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        a = [keyed("a") for _ in range(10)]
        b = [keyed("b") for _ in range(3)]
        await q.enqueue(a)
        await q.enqueue(b)
        order = await lease_keys(q, 8, index(a, b))
    # b joins just ahead of a's backlog (a tie on the pass would favour "a").
    assert order == ["b", "a", "b", "a", "b", "a", "a", "a"]


@async_test
async def test_a_new_key_goes_next_behind_a_long_backlog(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        a = [keyed("a") for _ in range(500)]
        await q.enqueue(a)
        by_id = index(a)
        assert set(await lease_keys(q, 200, by_id)) == {"a"}
        b = [keyed("b")]
        await q.enqueue(b)
        by_id.update(index(b))
        assert "b" in await lease_keys(q, 2, by_id)


@async_test
async def test_the_order_within_a_key_is_fifo(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        a = [keyed("a") for _ in range(5)]
        b = [keyed("b") for _ in range(5)]
        for x, y in zip(a, b, strict=True):
            await q.enqueue([x, y])
        popped, _ = await q.lease("q", ("t",), [token() for _ in range(10)], 30.0)
    ids = [r.id for r in popped]
    assert [i for i in ids if i in {r.id for r in a}] == [r.id for r in a]
    assert [i for i in ids if i in {r.id for r in b}] == [r.id for r in b]


@async_test
async def test_priorities_come_before_turns(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        flood = [keyed("a", M) for _ in range(20)]
        await q.enqueue(flood)
        urgent = [keyed("a", H), keyed("b", H)]
        low = [keyed("b", L)]
        await q.enqueue(urgent + low)
        popped, _ = await q.lease("q", ("t",), [token() for _ in range(23)], 30.0)
    assert {r.id for r in popped[:2]} == {r.id for r in urgent}
    assert popped[-1].id == low[0].id


@async_test
async def test_tasks_without_a_key_take_turns_with_keyed_ones(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        plain = [keyed("") for _ in range(5)]
        b = [keyed("b") for _ in range(2)]
        await q.enqueue(plain)
        await q.enqueue(b)
        order = await lease_keys(q, 7, index(plain, b))
    assert order == ["b", "", "b", "", "", "", ""]


@async_test
async def test_tasks_indexed_before_fair_dispatch_are_leased(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        old = uuid.uuid4()
        await q.redis.zadd(keys.ready("q", "t", M), {old.bytes: 1})  # no turn
        popped, _ = await q.lease("q", ("t",), [token()], 30.0)
    assert [r.id for r in popped] == [old]


@async_test
async def test_removed_and_emptied_keys_leave_the_turns(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        a, b = keyed("a"), keyed("b")
        await q.enqueue([a, b])
        await q.remove_ready(
            Task(a.id, "t", "q", M, TaskState.CANCELLED, 0, 3, 60.0, 30.0, 0.0, 0.0,
                 fairness_key="a")
        )  # fmt: skip
        stats = await RedisIndex(q.calls).stats("q")
        assert stats.pending == 1
        popped, _ = await q.lease("q", ("t",), [token(), token()], 30.0)
        assert [r.id for r in popped] == [b.id]
        assert await q.redis.zcard(keys.turns("q", "t", M)) == 0


@async_test
async def test_stats_count_every_key(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([keyed("a") for _ in range(3)] + [keyed("", H), keyed("b", L)])
        stats = await RedisIndex(q.calls).stats("q")
    assert stats.pending == 5
    assert stats.pending_by_priority == {H: 1, M: 3, L: 1}


@async_test
async def test_every_key_is_in_the_queues_hash_tag(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([keyed(k, p) for k in ("", "a", "b{x}") for p in (H, M, L)])
        await q.lease("q", ("t",), [token() for _ in range(4)], 30.0)
        names = [n.decode() for n in await q.redis.keys("dtq:{q}*")]
    assert names and all(n.startswith("dtq:{q}:") for n in names)
    assert any("#b{x}" in n for n in names)  # a brace in a key keeps the first tag


@async_test
async def test_the_reconciler_rebuilds_lists_and_turns(pg_url: str, redis_url: str) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as q:
        tasks = [new_task(queue="default", fairness_key="a") for _ in range(4)]
        tasks.append(new_task(queue="default", fairness_key="b"))
        await store.insert(tasks, time.time())
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()
        index_ = RedisIndex(q.calls)
        restored = await Reconciler(store, q, index_, PgQueues(store.pg)).reconcile("test")
        assert restored["ready"] == 5
        assert (await index_.stats("default")).pending == 5
        members = await q.redis.zrange(keys.turns("default", "email.send", M), 0, -1)
        assert sorted(members) == [b"a", b"b"]
        popped, _ = await q.lease("default", ("email.send",), [token(), token()], 30.0)
    key_of = {t.id: t.fairness_key for t in tasks}
    assert sorted(key_of[r.id] for r in popped) == ["a", "b"]
