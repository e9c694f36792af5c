"""Running caps and key weights on a real Redis: lease.lua passes over a
fairness key (or a queue) at its cap, end_leases.lua and claim_expired.lua
give the room back, and the reconciler rebuilds the counts after a flush."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis

from dtq.adapters import redis_keys as keys
from dtq.adapters.pg_queues import PgQueues
from dtq.adapters.redis_index import RedisIndex
from dtq.adapters.redis_queue import RedisQueue
from dtq.app.leasing import Leasing
from dtq.app.tasks import Tasks
from dtq.domain.limits import Share
from dtq.domain.model import LeaseRef, Priority, Subscription
from dtq.domain.retry import RetryPolicy
from dtq.domain.validation import Limits, SubmitSpec
from dtq.manager.reconciler import Reconciler
from dtq.ports import Grant, Ready, SystemClock
from tests.integration.helpers import async_test, new_task, pg_store, redis_queue, token

pytestmark = pytest.mark.usefixtures("clean")
M = Priority.MEDIUM


def keyed(key: str) -> Ready:
    return Ready(uuid.uuid4(), "q", "t", M, key)


async def lease(
    q: RedisQueue, n: int, share: Share, queue: str = "q", task_type: str = "t"
) -> list[tuple[Ready, str]]:
    """Lease up to n tasks under `share`: each with its token."""
    tokens = [token() for _ in range(n)]
    popped, _, _ = await q.lease_rated(queue, (task_type,), tokens, 30.0, {}, share)
    return list(zip(popped, tokens, strict=False))


async def running(q: RedisQueue, queue: str = "q") -> dict[str, int]:
    counts = await q.redis.hgetall(keys.running(queue))
    return {k.decode(): int(v) for k, v in counts.items() if int(v)}


@async_test
async def test_a_key_at_its_cap_is_passed_over_and_the_others_flow(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        a = [keyed("a") for _ in range(10)]
        b = [keyed("b") for _ in range(10)]
        await q.enqueue(a + b)
        key_of = {r.id: r.fairness_key for r in a + b}
        got = await lease(q, 8, Share(key_max_running=2))
        keys_ = sorted(key_of[r.id] for r, _ in got)
        assert keys_ == ["a", "a", "b", "b"]
        assert await lease(q, 8, Share(key_max_running=2)) == []
        assert await running(q) == {"all": 4, "#a": 2, "#b": 2}
        # Uncapped, the rest of a's backlog is still there, in order.
        rest = await lease(q, 20, Share())
        assert [r.id for r, _ in rest if key_of[r.id] == "a"] == [r.id for r in a[2:]]


@async_test
async def test_a_freed_slot_is_reused_and_wakes_the_streams(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        a = [keyed("a") for _ in range(5)]
        await q.enqueue(a)
        cap = Share(key_max_running=2)
        first = await lease(q, 5, cap)
        assert len(first) == 2
        assert await lease(q, 5, cap) == []
        pubsub = q.redis.pubsub()
        await pubsub.subscribe(keys.notify_channel("q"))
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        ready, tok = first[0]
        await q.drop_leases("q", [LeaseRef(ready.id, tok)])
        woke = await pubsub.get_message(timeout=2)
        await pubsub.aclose()
        assert woke is not None and woke["data"] == b"*"
        again = await lease(q, 5, cap)
        assert [r.id for r, _ in again] == [a[2].id]
        await q.drop_leases("q", [LeaseRef(ready.id, tok)])  # again: counted once
        assert await running(q) == {"all": 2, "#a": 2}


@async_test
async def test_outcomes_and_expiry_give_the_room_back(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([keyed("a") for _ in range(6)])
        cap = Share(max_running=3)
        held = await lease(q, 6, cap)
        assert len(held) == 3 and await lease(q, 6, cap) == []
        (done, tok), *rest = held
        await q.settle({"q": ([LeaseRef(done.id, tok)], 1, 0)}, [])
        assert await running(q) == {"all": 2, "#a": 2}
        await q.set_deadlines("q", [(LeaseRef(r.id, t), time.time() - 1) for r, t in rest])
        assert len(await q.claim_expired("q", 10)) == 2
        assert await running(q) == {}
        assert len(await lease(q, 6, cap)) == 3


@async_test
async def test_the_queue_cap_stops_every_key(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([keyed(k) for k in "abcd" for _ in range(3)])
        assert len(await lease(q, 12, Share(max_running=5, key_max_running=2))) == 5
        assert await lease(q, 12, Share(max_running=5, key_max_running=2)) == []
        assert len(await lease(q, 12, Share(max_running=9, key_max_running=2))) == 3


@async_test
async def test_weights_share_the_leases(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        items = [keyed(k) for k in "abc" for _ in range(100)]
        await q.enqueue(items)
        key_of = {r.id: r.fairness_key for r in items}
        got = await lease(q, 60, Share(weights=(("a", 3), ("b", 2))))
        counts = {k: sum(key_of[r.id] == k for r, _ in got) for k in "abc"}
    assert counts == {"a": 30, "b": 20, "c": 10}


@async_test
async def test_counts_survive_a_flush_and_the_rebuild(pg_url: str, redis_url: str) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as q:
        tasks = [new_task(queue="default", fairness_key="a") for _ in range(5)]
        await store.insert(tasks, time.time())
        index_ = RedisIndex(q.calls)
        reconciler = Reconciler(store, q, index_, PgQueues(store.pg))
        await reconciler.reconcile("test")
        cap = Share(key_max_running=2)
        held = await lease(q, 5, cap, "default", "email.send")
        await store.lease([Grant(r.id, t, "w1") for r, t in held], time.time())
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()
        assert await running(q, "default") == {}
        restored = await reconciler.reconcile("data_lost")
        assert restored["leases"] == 2
        assert await running(q, "default") == {"all": 2, "#a": 2}
        assert await lease(q, 5, cap, "default", "email.send") == []
        # A completion after the rebuild frees the slot it held.
        (r, t), _ = held
        await q.drop_leases("default", [LeaseRef(r.id, t)])
        await asyncio.sleep(0)
        assert len(await lease(q, 5, cap, "default", "email.send")) == 1


@async_test
async def test_children_take_slots_under_the_cap_and_a_cancel_frees_them(
    pg_url: str, redis_url: str
) -> None:
    """SubmitChildTasks indexes children like any submit, so they wait for room
    under their key's cap; cancelling the parent ends its running descendants'
    leases through end_leases.lua, giving their slots back."""
    async with pg_store(pg_url) as store, redis_queue(redis_url) as q:
        cap = Share(key_max_running=2)
        leasing = Leasing(store, q, SystemClock(), RetryPolicy(), share_of=lambda queue: cap)
        tasks = Tasks(store, q, SystemClock(), Limits())
        sub = Subscription(("q",), ("t",))
        spec = {"type": "t", "payload": b"", "queue": "q", "fairness_key": "a"}
        (parent,) = await tasks.submit([SubmitSpec(**spec)])  # type: ignore[arg-type]
        ((lease_,),) = await leasing.grant_many(sub, "q", [("w-1", 5)])
        parent_ref = LeaseRef(lease_.task.id, lease_.token)
        kids = [SubmitSpec(**spec, idempotency_key=f"#{i}") for i in range(3)]  # type: ignore[arg-type]
        await tasks.submit_children(parent_ref, kids)
        (got,) = await leasing.grant_many(sub, "q", [("w-1", 5)])
        assert len(got) == 1  # the parent holds the other slot
        assert await running(q) == {"all": 2, "#a": 2}
        (nothing,) = await leasing.grant_many(sub, "q", [("w-1", 5)])
        assert nothing == []
        await tasks.cancel(parent.task.id)
        assert await running(q) == {}
        # The cap still holds for the key's next tasks, and they get both slots.
        await tasks.submit([SubmitSpec(**spec) for _ in range(3)])  # type: ignore[arg-type]
        (after,) = await leasing.grant_many(sub, "q", [("w-1", 5)])
        assert len(after) == 2
        assert await running(q) == {"all": 2, "#a": 2}
