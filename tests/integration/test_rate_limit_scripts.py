"""The token buckets of the rate limits on a real Redis: take_tokens.lua (a
tenant's submit rate) and the dispatch rate inside lease.lua; and the limits
and queued count in PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest

from dtq.adapters import redis_keys as keys
from dtq.adapters.pg_limits import PgLimits
from dtq.adapters.redis_limits import RedisBuckets
from dtq.adapters.redis_queue import RedisQueue
from dtq.domain.limits import DispatchRate, TenantLimits
from tests.integration.helpers import async_test, new_task, pg_store, ready, redis_queue, token

pytestmark = pytest.mark.usefixtures("clean")


async def rated(q: RedisQueue, n: int, types: tuple[str, ...], rates: dict) -> tuple[list, float]:
    popped, _, wait = await q.lease_rated("q", types, [token() for _ in range(n)], 30, rates)
    return popped, wait


# -- submit bucket ---------------------------------------------------------------------


@async_test
async def test_a_batch_takes_all_its_tokens_or_none(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        buckets = RedisBuckets(q.calls)
        assert await buckets.take("acme", 6, 1.0, 10) == 0  # 4 left
        wait = await buckets.take("acme", 5, 1.0, 10)  # needs 5: refused whole
        assert 0.9 < wait <= 1.0  # one more token, at 1/s
        assert await buckets.take("acme", 4, 1.0, 10) == 0  # the 4 were left untouched
        assert await buckets.take("other", 10, 1.0, 10) == 0  # tenants have their own


@async_test
async def test_the_bucket_refills_at_the_rate(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        buckets = RedisBuckets(q.calls)
        assert await buckets.take("acme", 5, 20.0, 5) == 0
        assert await buckets.take("acme", 1, 20.0, 5) > 0
        await asyncio.sleep(0.12)  # 20/s: two tokens
        assert await buckets.take("acme", 2, 20.0, 5) == 0
        assert await buckets.take("acme", 1, 20.0, 5) > 0


@async_test
async def test_a_batch_over_the_burst_passes_a_full_bucket_into_debt(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        buckets = RedisBuckets(q.calls)
        assert await buckets.take("acme", 30, 10.0, 10) == 0  # full: let through, 20 owed
        wait = await buckets.take("acme", 1, 10.0, 10)
        assert 2.0 < wait <= 2.1  # the debt is paid back at the rate first
        key = keys.submit_bucket("acme")
        assert key == "dtq:tenant:{acme}:submit"
        assert 0 < await q.redis.pttl(key) <= 4000  # gone once it would be full again


@async_test
async def test_concurrent_takes_share_a_call_and_are_served_in_turn(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        buckets = RedisBuckets(q.calls)
        takes = [buckets.take(t, 1, 0.001, 5) for t in ("a", "b") for _ in range(8)]
        waits = await asyncio.gather(*takes)
        # Each tenant's bucket held 5: the first 5 of its 8 took them, in order.
        assert [w == 0 for w in waits] == ([True] * 5 + [False] * 3) * 2
        assert await buckets.take("a", 1, 0.001, 5) > 0


# -- dispatch rate in lease.lua --------------------------------------------------------


@async_test
async def test_a_rated_type_gets_its_burst_then_waits_for_a_token(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([ready("slow") for _ in range(10)])
        popped, wait = await rated(q, 10, ("slow",), {"slow": (5.0, 3)})
        assert len(popped) == 3
        assert 0.15 < wait <= 0.2  # 5/s: the next token in 200 ms
        popped, wait = await rated(q, 10, ("slow",), {"slow": (5.0, 3)})
        assert popped == [] and wait > 0
        await asyncio.sleep(wait)
        popped, _ = await rated(q, 10, ("slow",), {"slow": (5.0, 3)})
        assert len(popped) == 1


@async_test
async def test_a_rated_type_does_not_hold_back_the_others(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        slow = [ready("slow") for _ in range(5)]
        await q.enqueue(slow)  # older: first in line
        fast = [ready("fast") for _ in range(5)]
        await q.enqueue(fast)
        popped, wait = await rated(q, 10, ("slow", "fast"), {"slow": (1.0, 1)})
        assert [r.type for r in popped] == ["slow"] + ["fast"] * 5
        assert wait > 0.9


@async_test
async def test_no_wait_when_the_rated_type_has_nothing_ready(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([ready("slow")])
        popped, wait = await rated(q, 10, ("slow",), {"slow": (1.0, 1)})
        assert len(popped) == 1 and wait == 0  # bucket empty, but nobody waits
        assert await q.redis.exists(keys.dispatch_bucket("q", "slow"))


@async_test
async def test_unrated_leasing_is_unchanged(redis_url: str) -> None:
    async with redis_queue(redis_url) as q:
        await q.enqueue([ready("t") for _ in range(4)])
        popped, now = await q.lease("q", ["t"], [token() for _ in range(10)], 30)
        assert len(popped) == 4 and now > 0


# -- PostgreSQL ------------------------------------------------------------------------


@async_test
async def test_limits_are_stored_and_replaced(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        limits = PgLimits(store.pg)
        await limits.set_tenant_limits(TenantLimits("acme", 10.0, 20, 100))
        await limits.set_tenant_limits(TenantLimits("acme", None, None, 5))
        (got,) = await limits.tenant_limits()
        assert (got.tenant, got.submit_rate, got.submit_burst, got.max_queued) == (
            "acme",
            None,
            None,
            5,
        )
        await limits.set_dispatch_rate(DispatchRate("q", "slow", 2.5, 3))
        (rate,) = await limits.dispatch_rates()
        assert (rate.queue, rate.task_type, rate.rate, rate.burst) == ("q", "slow", 2.5, 3)
        assert await limits.delete_dispatch_rate("q", "slow")
        assert not await limits.delete_dispatch_rate("q", "slow")


@async_test
async def test_queued_counts_pending_and_scheduled(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        limits = PgLimits(store.pg)
        assert await limits.count_queued("default") == 0
        now = time.time()
        later = new_task(scheduled_at=now + 60)
        await store.insert([new_task(), new_task(), later], now)
        assert await limits.count_queued("default") == 3
        await store.cancel(later.id, now)
        assert await limits.count_queued("default") == 2
