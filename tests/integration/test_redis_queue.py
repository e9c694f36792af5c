"""Contract of the DispatchQueue port, run against RedisQueue and its Lua
scripts on a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis

from dtq.adapters import redis_keys as keys
from dtq.adapters.redis_conn import RedisCalls
from dtq.adapters.redis_index import RedisIndex
from dtq.adapters.redis_queue import RedisQueue
from dtq.adapters.redis_workers import RedisWorkers
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import LeaseRef, Priority, Task, TaskState, WorkerInfo
from dtq.ports import Ready
from tests.integration.helpers import async_test, ready, redis_queue, token

pytestmark = pytest.mark.usefixtures("clean")
H, M, L = Priority.HIGH, Priority.MEDIUM, Priority.LOW


async def lease(
    q: RedisQueue, n: int, types: tuple[str, ...] = ("t",), seconds: float = 30.0, queue: str = "q"
) -> tuple[list[Ready], list[str], float]:
    """Lease up to n tasks; returns them, the tokens offered and Redis's clock."""
    tokens = [token() for _ in range(n)]
    popped, now = await q.lease(queue, types, tokens, seconds)
    return popped, tokens, now


async def held(q: RedisQueue, queue: str = "q") -> dict[bytes, float]:
    """Lease members and deadlines (Unix s) recorded for `queue`."""
    found = await q.redis.zrange(keys.leases(queue), 0, -1, withscores=True)
    return {member: score / 1000 for member, score in found}


def a_task(r: Ready) -> Task:
    return Task(r.id, r.type, r.queue, r.priority, TaskState.PENDING, 0, 3, 60.0, 30.0, 0.0, 0.0)


# -- order ---------------------------------------------------------------------------------


@async_test
async def test_fifo_within_a_priority(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        first = [ready() for _ in range(5)]
        await q.enqueue(first)
        later = [ready() for _ in range(5)]
        for r in later:
            await q.enqueue([r])
        popped, _, _ = await lease(q, 10)
    assert [r.id for r in popped] == [r.id for r in first + later]


@async_test
async def test_high_before_medium_before_low(redis_url: str) -> None:
    async with redis_queue(redis_url, aging_seconds=60) as q:
        low, medium, high = ready(priority=L), ready(priority=M), ready(priority=H)
        for r in (low, medium, high):  # oldest first
            await q.enqueue([r])
        popped, _, _ = await lease(q, 3)
    assert popped == [high, medium, low]


@async_test
async def test_an_old_low_task_overtakes_a_fresh_high_one(redis_url: str) -> None:
    async with redis_queue(redis_url, aging_seconds=0.05) as q:
        low = ready(priority=L)
        await q.enqueue([low])
        await asyncio.sleep(0.15)  # more than two priority steps of head start
        high = ready(priority=H)
        await q.enqueue([high])
        popped, _, _ = await lease(q, 2)
    assert popped == [low, high]


@async_test
async def test_each_priority_step_is_one_head_start(redis_url: str) -> None:
    async with redis_queue(redis_url, aging_seconds=0.2) as q:
        low, medium = ready(priority=L), ready(priority=M)
        await q.enqueue([low])
        await asyncio.sleep(0.25)  # more than one step of head start, less than two
        high = ready(priority=H)
        await q.enqueue([medium, high])
        popped, _, _ = await lease(q, 3)
    assert popped == [high, low, medium]


@async_test
async def test_lease_takes_only_the_subscribed_types_oldest_first(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        a1, b1, c1, a2 = ready("a"), ready("b", H), ready("c", H), ready("a", L)
        for r in (a1, b1, c1, a2):
            await q.enqueue([r])
        popped, _, _ = await lease(q, 10, types=("a", "b"))
        rest, _, _ = await lease(q, 10, types=("c",))
    assert popped == [b1, a1, a2]
    assert rest == [c1]


@async_test
async def test_queues_are_separate(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        mine, theirs = ready(queue="q"), ready(queue="other")
        await q.enqueue([mine, theirs])
        popped, _, _ = await lease(q, 10)
        assert popped == [mine]
        assert await RedisIndex(q.calls).queues() == {"q", "other"}


@async_test
async def test_enqueue_again_keeps_the_place(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        first, second = ready(), ready()
        await q.enqueue([first])
        await q.enqueue([second])
        await q.enqueue([first])  # a rebuild re-indexes it: it stays ahead
        popped, _, _ = await lease(q, 10)
    assert popped == [first, second]


# -- leases -------------------------------------------------------------------------------


@async_test
async def test_lease_records_each_token_and_maps_each_key(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        want = [ready("a", H), ready("b", M), ready("b", L), ready("a", L)]
        await q.enqueue(want)
        before = time.time()
        popped, tokens, now = await lease(q, 6, types=("a", "b"), seconds=12.5)
        deadlines = await held(q)
    assert popped == want  # with each one's type and priority
    assert before - 1 < now < time.time() + 1
    expected = {
        r.id.bytes + bytes.fromhex(t): now + 12.5 for r, t in zip(popped, tokens, strict=False)
    }
    assert deadlines.keys() == expected.keys()
    for member, deadline in deadlines.items():
        assert deadline == pytest.approx(expected[member], abs=0.002)


@async_test
async def test_lease_of_an_empty_queue(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        popped, _, now = await lease(q, 3)
        assert popped == []
        assert now > 0
        assert await held(q) == {}


@async_test
async def test_a_paused_queue_leases_nothing(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        task = ready()
        await q.enqueue([task])
        await RedisIndex(q.calls).set_paused("q", True)
        assert (await lease(q, 1))[0] == []
        assert (await RedisIndex(q.calls).stats("q")).paused
        await RedisIndex(q.calls).set_paused("q", False)
        assert (await lease(q, 1))[0] == [task]
        assert not (await RedisIndex(q.calls).stats("q")).paused


@async_test
async def test_extend_a_held_lease_and_not_a_lost_one(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([ready(), ready()])
        (kept, lost), (t1, t2), now = await lease(q, 2, seconds=5)
        await q.drop_leases("q", [LeaseRef(lost.id, t2)])
        refs = [(LeaseRef(kept.id, t1), 60.0), (LeaseRef(lost.id, t2), 60.0)]
        refs.append((LeaseRef(kept.id, token()), 60.0))  # right task, wrong token
        deadline, none, wrong = await q.extend("q", refs)
        assert deadline == pytest.approx(now + 60, abs=1)
        assert (none, wrong) == (None, None)
        assert list((await held(q)).values()) == [deadline]
        assert await q.extend("q", []) == []


@async_test
async def test_set_deadlines_moves_only_held_leases(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([ready()])
        (task,), (tok,), now = await lease(q, 1)
        gone = LeaseRef(uuid.uuid4(), token())
        await q.set_deadlines("q", [(LeaseRef(task.id, tok), now + 99), (gone, now + 99)])
        assert list((await held(q)).values()) == [pytest.approx(now + 99, abs=0.002)]


@async_test
async def test_claim_expired_takes_only_expired_leases_once(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([ready() for _ in range(3)])
        short, short_tokens, _ = await lease(q, 2, seconds=0.05)
        await q.enqueue([ready()])
        (long,), _, _ = await lease(q, 1, seconds=60)
        await asyncio.sleep(0.1)
        claimed = await q.claim_expired("q", 100)
        assert sorted(claimed, key=str) == sorted(
            (LeaseRef(r.id, t) for r, t in zip(short, short_tokens, strict=True)), key=str
        )
        assert await q.claim_expired("q", 100) == []
        assert [m[:16] for m in await held(q)] == [long.id.bytes]


@async_test
async def test_claim_expired_respects_the_limit(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([ready() for _ in range(5)])
        await lease(q, 5, seconds=0.01)
        await asyncio.sleep(0.05)
        assert len(await q.claim_expired("q", 3)) == 3
        assert len(await q.claim_expired("q", 3)) == 2


@async_test
async def test_two_concurrent_claimers_never_share_a_lease(redis_url: str) -> None:
    async with redis_queue(redis_url) as one, redis_queue(redis_url) as two:
        await one.enqueue([ready() for _ in range(200)])
        await lease(one, 200, seconds=0.01)
        await asyncio.sleep(0.05)
        batches = await asyncio.gather(*(q.claim_expired("q", 25) for q in (one, two) * 6))
    claimed = [r for batch in batches for r in batch]
    assert len(claimed) == len(set(claimed)) == 200


@async_test
async def test_drop_leases(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([ready(), ready()])
        (a, b), (ta, tb), _ = await lease(q, 2)
        await q.drop_leases("q", [LeaseRef(a.id, ta), LeaseRef(b.id, token())])
        assert list(await held(q)) == [b.id.bytes + bytes.fromhex(tb)]
        await q.drop_leases("q", [])


@async_test
async def test_remove_ready(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        gone, kept = ready(priority=H), ready(priority=H)
        await q.enqueue([gone, kept])
        await q.remove_ready(a_task(gone))
        assert (await lease(q, 2))[0] == [kept]


# -- stats and registry ----------------------------------------------------------------------


@async_test
async def test_stats(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([ready("a", H), ready("a", L), ready("b", L), ready("b", M), ready("b", M)])
        await asyncio.sleep(0.2)
        await q.enqueue([ready("c", H)])
        await lease(q, 1, types=("c",))
        await q.settle({"q": ((), 3, 0)}, ())
        await q.settle({"q": ((), 1, 2)}, ())
        stats = await RedisIndex(q.calls).stats("q")
        empty = await RedisIndex(q.calls).stats("nothing-here")
    assert stats.pending_by_priority == {H: 1, M: 2, L: 2}
    assert stats.pending == 5
    assert stats.running == 1
    assert 0.2 <= stats.oldest_pending_age < 5
    assert (stats.completed_last_minute, stats.failed_last_minute) == (4, 2)
    assert not stats.paused
    assert (empty.pending, empty.running, empty.oldest_pending_age) == (0, 0, 0.0)


@async_test
async def test_worker_registry(redis_url: str) -> None:
    worker = WorkerInfo("w-1", "host", 42, ("q",), ("t",), 4, "1.0", {"zone": "a"}, 1.0, 2.0)
    async with redis_queue(redis_url) as q:
        workers = RedisWorkers(q.calls)
        await workers.upsert(worker)
        await workers.touch("w-1", active_tasks=3, draining=True, now=time.time())
        got = await workers.get("w-1")
        listed, total = await workers.page(0, 10)
        seen = await workers.count_seen_since(time.time() - 60)
        assert await workers.get("unknown") is None
    assert got is not None
    assert (got.queues, got.labels, got.active_tasks, got.draining) == (
        ("q",),
        {"zone": "a"},
        3,
        True,
    )
    assert ([w.id for w in listed], total, seen) == (["w-1"], 1, 1)


@async_test
async def test_unreachable_redis_is_unavailable(redis_url: str) -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        with pytest.raises(DtqError) as caught:
            await RedisQueue(RedisCalls(client)).enqueue([ready()])
    finally:
        await client.aclose()
    assert (caught.value.code, caught.value.reason) == (Code.UNAVAILABLE, "REDIS_UNAVAILABLE")
    assert caught.value.retry_after is not None
