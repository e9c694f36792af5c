"""Handing leases back (a worker shutting down): PgStore.release fencing and
Leasing.release over the real PostgreSQL and Redis."""

from __future__ import annotations

import time

import pytest

from dtq.domain.model import LeaseRef, TaskState
from tests.integration.helpers import async_test, pg_store, token
from tests.integration.test_leasing import world
from tests.integration.test_pg_store import insert_one, lease_one, ref

pytestmark = pytest.mark.usefixtures("clean")
S = TaskState


@async_test
async def test_release_makes_the_task_pending_without_using_a_retry(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        running = await lease_one(store, (await insert_one(store)).id)
        assert running.attempts == 1
        (released,) = await store.release([ref(running)], time.time())
        # Attempt numbers are never reused; the retry budget grows by the released one.
        assert (released.state, released.attempts) == (S.PENDING, 1)
        assert released.max_retries == running.max_retries + 1
        assert released.lease_token is None
        assert released.worker_id == "w-1"  # kept, for the record


@async_test
async def test_release_with_a_wrong_token_changes_nothing(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        running = await lease_one(store, (await insert_one(store)).id)
        assert await store.release([LeaseRef(running.id, token())], time.time()) == []
        after = await store.get(running.id)
        assert after is not None
        assert (after.state, after.attempts, after.lease_token) == (
            S.RUNNING,
            1,
            running.lease_token,
        )


@async_test
async def test_release_after_the_outcome_or_a_cancel_is_ignored(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        done = await lease_one(store, (await insert_one(store)).id)
        await store.complete([(ref(done), b"ok")], time.time())
        cancelled = await lease_one(store, (await insert_one(store)).id)
        await store.cancel(cancelled.id, time.time())
        assert await store.release([ref(done), ref(cancelled)], time.time()) == []
        states = {t.id: t.state for t in await store.get_many([done.id, cancelled.id])}
        assert states == {done.id: S.COMPLETED, cancelled.id: S.CANCELLED}


@async_test
async def test_release_twice_moves_the_task_once(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        running = await lease_one(store, (await insert_one(store)).id)
        assert len(await store.release([ref(running)], time.time())) == 1
        assert await store.release([ref(running)], time.time()) == []
        after = await store.get(running.id)
        assert after is not None
        assert (after.attempts, after.max_retries) == (1, running.max_retries + 1)


@async_test
async def test_leasing_release_reindexes_the_task_and_drops_the_lease(
    pg_url: str, redis_url: str
) -> None:
    async with world(pg_url, redis_url) as w:
        task = await w.submit()
        (lease,) = await w.grant()
        assert len(await w.redis_leases()) == 1
        released = await w.leasing.release(
            [LeaseRef(task.id, lease.token), LeaseRef(task.id, token())]
        )
        assert [t.id for t in released] == [task.id]
        assert await w.redis_leases() == []
        (again,) = await w.grant()  # ready again at once, under a new token
        assert again.task.id == task.id
        assert again.token != lease.token
        assert again.task.attempts == 2  # a new attempt number
        assert again.task.max_retries == task.max_retries + 1  # but no retry used up
