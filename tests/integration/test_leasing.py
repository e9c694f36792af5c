"""Leasing use cases (dtq/app/leasing.py) over the real PgStore and RedisQueue."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg2
import pytest

from dtq.adapters import redis_keys as keys
from dtq.adapters.pg_store import PgStore
from dtq.adapters.redis_index import RedisIndex
from dtq.adapters.redis_queue import RedisQueue
from dtq.app.leasing import Leasing, deal
from dtq.app.tasks import Tasks
from dtq.domain.errors import STALE_LEASE, Code, DtqError, OutcomeUnknown
from dtq.domain.model import Lease, LeaseRef, Outcome, Subscription, Task, TaskError, TaskState
from dtq.domain.retry import RetryPolicy
from dtq.domain.validation import Limits, SubmitSpec
from dtq.ports import Ready, SystemClock
from tests.integration.helpers import async_test, new_task, pg_store, redis_queue, token, with_lease

pytestmark = pytest.mark.usefixtures("clean")
S = TaskState
SUB = Subscription(("q",), ("t",))
SHORT = 0.3  # seconds: a lease the tests can wait out


@dataclass
class World:
    store: PgStore
    queue: RedisQueue
    leasing: Leasing

    async def submit(self, lease: float | None = None, **spec: object) -> Task:
        """Store a task and index it as ready, as TaskService.Submit does."""
        new = new_task(type="t", queue="q", **spec)
        if lease is not None:
            new = with_lease(new, lease)
        (submitted,) = await self.store.insert([new], time.time())
        await self.queue.enqueue([Ready.of(submitted.task)])
        return submitted.task

    async def grant(self, n: int = 10) -> list[Lease]:
        (leases,) = await self.leasing.grant_many(SUB, "q", [("w-1", n)])
        return leases

    async def task(self, task_id: uuid.UUID) -> Task:
        found = await self.store.get(task_id)
        assert found is not None
        return found

    async def redis_leases(self) -> list[bytes]:
        return list(await self.queue.redis.zrange(keys.leases("q"), 0, -1))

    async def promote_due(self) -> None:
        """What the queue manager's scheduler does."""
        promoted = await self.store.promote_due(time.time(), 100)
        await self.queue.enqueue([Ready.of(t) for t in promoted])


@contextlib.asynccontextmanager
async def world(
    pg_url: str, redis_url: str, default_lease: float = 30.0, retry_cap: float = 0.0
) -> AsyncIterator[World]:
    # A zero backoff cap makes every retry due at once.
    policy = RetryPolicy(base=2.0, cap=retry_cap)
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        yield World(store, queue, Leasing(store, queue, SystemClock(), policy, default_lease))


def ok(lease: Lease, result: bytes = b"1") -> Outcome:
    return Outcome(lease.task.id, lease.token, result=result)


def failed(lease: Lease, permanent: bool = False) -> Outcome:
    return Outcome(lease.task.id, lease.token, error=TaskError("boom", "E", permanent=permanent))


def assert_stale(result: Task | DtqError) -> None:
    assert isinstance(result, DtqError)
    assert (result.code, result.reason) == (Code.FAILED_PRECONDITION, STALE_LEASE)


# -- grant ------------------------------------------------------------------------------


@async_test
async def test_grant_leases_ready_tasks_with_their_tokens(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        submitted = [await w.submit() for _ in range(3)]
        before = time.time()
        leases = await w.grant(10)
        assert [lease.task.id for lease in leases] == [t.id for t in submitted]
        for lease in leases:
            stored = await w.task(lease.task.id)
            assert (stored.state, stored.attempts, stored.worker_id) == (S.RUNNING, 1, "w-1")
            assert stored.lease_token == lease.token
            assert before + 29 < lease.expire_at < time.time() + 31
        members = {lease.task.id.bytes + bytes.fromhex(lease.token) for lease in leases}
        assert set(await w.redis_leases()) == members
        assert await w.grant(10) == []


@async_test
async def test_grant_many_deals_tasks_out_to_each_worker_in_one_call(
    pg_url: str, redis_url: str
) -> None:
    async with world(pg_url, redis_url) as w:
        submitted = [await w.submit() for _ in range(10)]
        a, b, c = await w.leasing.grant_many(SUB, "q", [("w-a", 3), ("w-b", 10), ("w-c", 1)])
        assert (len(a), len(b), len(c)) == (3, 6, 1)
        # Dealt in turn: the oldest tasks are spread over the workers.
        assert [x.task.id for x in (a[0], b[0], c[0])] == [t.id for t in submitted[:3]]
        leases = [*a, *b, *c]
        assert {x.task.id for x in leases} == {t.id for t in submitted}
        assert len({x.token for x in leases}) == 10
        for worker, held in (("w-a", a), ("w-b", b), ("w-c", c)):
            for lease in held:
                stored = await w.task(lease.task.id)
                assert (stored.state, stored.worker_id) == (S.RUNNING, worker)
                assert stored.lease_token == lease.token
        members = {x.task.id.bytes + bytes.fromhex(x.token) for x in leases}
        assert set(await w.redis_leases()) == members
        assert await w.leasing.grant_many(SUB, "q", [("w-a", 5), ("w-b", 5)]) == [[], []]


def test_deal_gives_each_taker_at_most_what_it_wants_in_turn() -> None:
    assert deal([3, 10, 1], 10) == [0, 1, 2, 0, 1, 0, 1, 1, 1, 1]
    assert deal([2, 2], 3) == [0, 1, 0]
    assert deal([5], 0) == []


@async_test
async def test_a_lease_whose_commit_answer_was_lost_is_settled_when_it_expires(
    pg_url: str, redis_url: str
) -> None:
    async with world(pg_url, redis_url, default_lease=SHORT) as w:
        await w.submit()
        (warm,) = await w.grant()  # opens the connection (server-side timeout 5 s)
        task = await w.submit()
        w.store.pg.timeout = 0.3  # the client gives up long before the server does
        locker = psycopg2.connect(pg_url)
        try:
            with locker.cursor() as cur:  # the UPDATE waits for this row lock
                cur.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (str(task.id),))
            with pytest.raises(OutcomeUnknown):
                await w.grant()
        finally:
            locker.rollback()  # the waiting UPDATE goes on, and commits
            locker.close()
        w.store.pg.timeout = 5.0
        for _ in range(100):
            if (await w.task(task.id)).state == S.RUNNING:
                break
            await asyncio.sleep(0.02)
        running = await w.task(task.id)
        assert running.state == S.RUNNING, "the lease did commit"
        # Its provisional Redis lease was kept (not dropped as if never recorded)...
        members = await w.redis_leases()
        assert task.id.bytes + bytes.fromhex(running.lease_token or "") in members
        # ...so it expires, and the reaper hands the task back: nothing waits for
        # the reconciler.
        await asyncio.sleep(SHORT + 0.1)
        await w.leasing.reap("q")
        assert (await w.task(task.id)).state == S.PENDING
        (again,) = await w.grant()
        assert (again.task.id, again.task.attempts) == (task.id, 2)
        assert warm.task.id != task.id  # the warm-up lease (30 s) is still held


@async_test
async def test_a_submit_whose_commit_answer_was_lost_is_indexed_anyway(
    pg_url: str, redis_url: str
) -> None:
    async with world(pg_url, redis_url) as w:
        tasks = Tasks(w.store, w.queue, SystemClock(), Limits())
        await tasks.submit([SubmitSpec(type="t", payload=b"", queue="q")])  # opens the connection
        w.store.pg.timeout = 0.3  # the client gives up long before the server does
        locker = psycopg2.connect(pg_url)
        try:
            with locker.cursor() as cur:  # the INSERT waits for this lock
                cur.execute("LOCK TABLE tasks IN EXCLUSIVE MODE")
            with pytest.raises(OutcomeUnknown):
                await tasks.submit([SubmitSpec(type="t", payload=b"", queue="q")])
        finally:
            locker.rollback()  # the waiting INSERT goes on, and commits
            locker.close()
        w.store.pg.timeout = 5.0
        (lost,) = tasks.deferred  # kept to index, as when Redis is down
        assert await tasks.flush_deferred() == 1
        leased = {x.task.id for x in await w.grant()}
        assert lost in leased, "the committed task was indexed without the reconciler"


@async_test
async def test_grant_uses_each_task_s_own_lease_duration(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        await w.submit(lease_duration=120.0)
        (lease,) = await w.grant()
        (deadline,) = await w.queue.redis.zrange(keys.leases("q"), 0, -1, withscores=True)
    assert deadline[1] / 1000 == pytest.approx(lease.expire_at, abs=0.002)
    assert lease.expire_at == pytest.approx(time.time() + 120, abs=2)


@async_test
async def test_grant_skips_a_task_cancelled_after_it_was_indexed(
    pg_url: str, redis_url: str
) -> None:
    async with world(pg_url, redis_url) as w:
        cancelled = await w.submit()
        kept = await w.submit()
        await w.store.cancel(cancelled.id, time.time())  # its index entry is still there
        leases = await w.grant()
        assert [lease.task.id for lease in leases] == [kept.id]
        assert [m[:16] for m in await w.redis_leases()] == [kept.id.bytes]
        assert (await w.task(cancelled.id)).state == S.CANCELLED


# -- outcomes ---------------------------------------------------------------------------------


@async_test
async def test_success_completes_and_releases_the_lease(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        await w.submit()
        (lease,) = await w.grant()
        (done,) = await w.leasing.report([ok(lease, b'{"sent":true}')])
        stored = await w.task(lease.task.id)
        stats = await RedisIndex(w.queue.calls).stats("q")
    assert isinstance(done, Task)
    assert (done.state, stored.state, stored.result) == (S.COMPLETED, S.COMPLETED, b'{"sent":true}')
    assert (stats.running, stats.completed_last_minute) == (0, 1)


@async_test
async def test_a_stale_token_is_refused(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        await w.submit()
        (lease,) = await w.grant()
        forged = Lease(lease.task, token(), lease.expire_at)
        results = await w.leasing.report([ok(forged), failed(forged)])
        for result in results:
            assert_stale(result)
        assert (await w.task(lease.task.id)).state == S.RUNNING
        assert len(await w.redis_leases()) == 1
        (done,) = await w.leasing.report([ok(lease)])
        assert isinstance(done, Task)
        assert_stale((await w.leasing.report([ok(lease)]))[0])  # reported twice


@async_test
async def test_a_stale_and_a_current_outcome_of_one_task_in_one_report(
    pg_url: str, redis_url: str
) -> None:
    async with world(pg_url, redis_url) as w:
        await w.submit()
        (lease,) = await w.grant()
        forged = Lease(lease.task, token(), lease.expire_at)
        stale_one, current = await w.leasing.report([ok(forged), ok(lease)])
        stats = await RedisIndex(w.queue.calls).stats("q")
    assert_stale(stale_one)
    assert isinstance(current, Task)
    assert current.state == S.COMPLETED
    assert stats.completed_last_minute == 1


@async_test
async def test_a_failure_is_retried_then_dead_lettered(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        task = await w.submit(max_retries=2)
        for attempt in (1, 2):
            (lease,) = await w.grant()
            (result,) = await w.leasing.report([failed(lease)])
            assert isinstance(result, Task)
            assert (result.state, result.attempts) == (S.FAILED, attempt)
            assert result.scheduled_at is not None
            await w.promote_due()
        (lease,) = await w.grant()
        (result,) = await w.leasing.report([failed(lease)])
        stats = await RedisIndex(w.queue.calls).stats("q")
    assert isinstance(result, Task)
    assert (result.id, result.state, result.attempts) == (task.id, S.DEAD_LETTERED, 3)
    assert result.finished_at is not None
    assert (stats.running, stats.failed_last_minute) == (0, 3)


@async_test
async def test_a_retry_waits_its_backoff(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url, retry_cap=600.0) as w:
        await w.submit(max_retries=5)
        (lease,) = await w.grant()
        before = time.time()
        (result,) = await w.leasing.report([failed(lease)])
    assert isinstance(result, Task)
    assert result.scheduled_at is not None
    assert before <= result.scheduled_at <= time.time() + RetryPolicy(2.0, 600.0).ceiling(1)


@async_test
async def test_a_permanent_error_dead_letters_at_once(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        await w.submit(max_retries=5)
        (lease,) = await w.grant()
        (result,) = await w.leasing.report([failed(lease, permanent=True)])
    assert isinstance(result, Task)
    assert (result.state, result.attempts) == (S.DEAD_LETTERED, 1)
    assert result.error is not None
    assert result.error.permanent


@async_test
async def test_one_report_mixes_outcomes(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        for _ in range(3):
            await w.submit()
        a, b, c = await w.grant()
        forged = Outcome(c.task.id, token(), result=b"1")
        results = await w.leasing.report([failed(a), ok(b), forged])
    assert [r.state for r in results[:2] if isinstance(r, Task)] == [S.FAILED, S.COMPLETED]
    assert_stale(results[2])


# -- expiry --------------------------------------------------------------------------------


@async_test
async def test_reap_hands_an_expired_task_back(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url, default_lease=SHORT) as w:
        task = await w.submit(lease=SHORT)
        (lease,) = await w.grant()
        assert await w.leasing.reap("q") == (0, 0)  # not expired yet
        await asyncio.sleep(SHORT + 0.1)
        assert await w.leasing.reap("q") == (1, 1)
        stored = await w.task(task.id)
        assert (stored.state, stored.attempts, stored.lease_token) == (S.PENDING, 1, None)
        assert stored.error is not None
        assert stored.error.type == "LeaseExpired"
        assert_stale((await w.leasing.report([ok(lease)]))[0])
        (again,) = await w.grant()  # indexed again
        assert (again.task.id, again.task.attempts) == (task.id, 2)


@async_test
async def test_reap_dead_letters_an_exhausted_task(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url, default_lease=SHORT) as w:
        task = await w.submit(lease=SHORT, max_retries=0)
        await w.grant()
        await asyncio.sleep(SHORT + 0.1)
        assert await w.leasing.reap("q") == (1, 1)
        stored = await w.task(task.id)
        assert (stored.state, stored.attempts) == (S.DEAD_LETTERED, 1)
        assert stored.finished_at is not None
        assert await w.grant() == []
        assert await w.redis_leases() == []


@async_test
async def test_reap_reindexes_a_task_popped_but_never_marked_running(
    pg_url: str, redis_url: str
) -> None:
    async with world(pg_url, redis_url, default_lease=SHORT) as w:
        task = await w.submit(lease=SHORT)
        # A server popped it from Redis, then died before PostgreSQL recorded the lease.
        popped, _ = await w.queue.lease("q", ["t"], [token()], SHORT)
        assert [r.id for r in popped] == [task.id]
        await asyncio.sleep(SHORT + 0.1)
        # Claimed, but no running task's lease expired: it was never running.
        assert await w.leasing.reap("q") == (1, 0)
        assert (await w.task(task.id)).state == S.PENDING
        (lease,) = await w.grant()
        assert (lease.task.id, lease.task.attempts) == (task.id, 1)


# -- extending -----------------------------------------------------------------------------


@async_test
async def test_extend_one(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        await w.submit(lease_duration=20.0)
        (lease,) = await w.grant()
        ref = LeaseRef(lease.task.id, lease.token)
        assert await w.leasing.extend_one(ref, 300.0) == pytest.approx(time.time() + 300, abs=2)
        assert await w.leasing.extend_one(ref, None) == pytest.approx(time.time() + 20, abs=2)


@async_test
async def test_extend_one_refuses_what_is_not_held(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        await w.submit()
        (lease,) = await w.grant()
        held = LeaseRef(lease.task.id, lease.token)
        with pytest.raises(DtqError) as caught:
            await w.leasing.extend_one(LeaseRef(lease.task.id, token()), 10.0)
        assert (caught.value.code, caught.value.reason) == (Code.FAILED_PRECONDITION, STALE_LEASE)
        with pytest.raises(DtqError) as caught:
            await w.leasing.extend_one(LeaseRef(uuid.uuid4(), token()), 10.0)
        assert (caught.value.code, caught.value.reason) == (Code.NOT_FOUND, "TASK_NOT_FOUND")
        await w.leasing.report([ok(lease)])
        with pytest.raises(DtqError) as caught:
            await w.leasing.extend_one(held, 10.0)
        assert caught.value.reason == STALE_LEASE


@async_test
async def test_extend_one_after_the_lease_was_reclaimed(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        await w.submit()
        (lease,) = await w.grant()
        held = LeaseRef(lease.task.id, lease.token)
        await w.queue.drop_leases("q", [held])  # Redis lost it; PostgreSQL still says running
        with pytest.raises(DtqError) as caught:
            await w.leasing.extend_one(held, 10.0)
        assert (caught.value.code, caught.value.reason) == (Code.FAILED_PRECONDITION, STALE_LEASE)


@async_test
async def test_heartbeat_extend_reports_lost_leases(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url) as w:
        await w.submit()
        await w.submit()
        kept, lost = await w.grant()
        await w.leasing.report([ok(lost)])
        refs = [(LeaseRef(x.task.id, x.token), 30.0) for x in (kept, lost)]
        deadline, gone = await w.leasing.extend("q", refs)
    assert deadline == pytest.approx(time.time() + 30, abs=2)
    assert gone is None
