"""Dead letters and retention on the real PostgreSQL (and Redis for the use cases):
PgStore.requeue_dead, count_dead, purge_dead, purge_finished, and the Admin
use cases built on them."""

from __future__ import annotations

import asyncio
import time

import pytest

from dtq.adapters.pg_dead_letters import PURGE_BATCH
from dtq.adapters.pg_sql import Sql
from dtq.adapters.pg_store import PgStore
from dtq.adapters.redis_index import RedisIndex
from dtq.adapters.redis_queue import RedisQueue
from dtq.adapters.redis_workers import RedisWorkers
from dtq.app.admin import Admin
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import Task, TaskFilter, TaskState
from dtq.manager.retention import Retention
from dtq.ports import SystemClock
from tests.integration.helpers import async_test, new_task, pg_store, redis_queue, token
from tests.integration.test_pg_store import in_state

pytestmark = pytest.mark.usefixtures("clean")
S = TaskState
ALL_STATES = [S.PENDING, S.SCHEDULED, S.RUNNING, S.FAILED, S.COMPLETED, S.CANCELLED]


def admin_of(store: PgStore, queue: RedisQueue) -> Admin:
    return Admin(store, queue, RedisIndex(queue.calls), RedisWorkers(queue.calls), SystemClock())


async def dead(store: PgStore, n: int, **spec: object) -> list[Task]:
    """`n` dead letters, oldest first."""
    return [await in_state(store, S.DEAD_LETTERED, **spec) for _ in range(n)]


async def states_of(store: PgStore) -> dict[object, TaskState]:
    return {t.id: t.state for t in await store.list_tasks(TaskFilter(), None, 10_000, False)}


async def many_dead(store: PgStore, n: int, queue: str = "bulk") -> None:
    """`n` dead letters at once (the store's transitions, one by one, are slow)."""
    await store.insert([new_task(queue=queue) for _ in range(n)], time.time())
    sql = "UPDATE tasks SET state = 'dead_lettered', attempts = 1, finished_at = now()"
    await store.pg.fetch(Sql(sql, dict))


# -- requeue_dead ------------------------------------------------------------------------


@async_test
async def test_requeue_dead_takes_only_the_dead_letters_of_the_queue_and_type(
    pg_url: str,
) -> None:
    async with pg_store(pg_url) as store:
        wanted = await dead(store, 2, queue="q1", type="a", max_retries=2)
        others = await dead(store, 1, queue="q1", type="b") + await dead(store, 1, queue="q2")
        alive = [await in_state(store, s, queue="q1", type="a") for s in ALL_STATES]
        before = await states_of(store)
        moved = await store.requeue_dead("q1", "a", 100, time.time())
        after = await states_of(store)
    assert [t.id for t in moved] == [t.id for t in wanted]
    for t in moved:
        assert t.state == S.PENDING
        assert (t.scheduled_at, t.finished_at, t.lease_token) == (None, None, None)
        assert (t.attempts, t.max_retries) == (1, 1 + 2)  # as RetryTask: 3 more attempts
        assert t.error is not None  # the last error stays for the record
    untouched = [t.id for t in others + alive]
    assert {i: after[i] for i in untouched} == {i: before[i] for i in untouched}


@async_test
async def test_requeue_dead_without_a_type_and_the_same_budget_as_retry(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        a, b = await dead(store, 1, type="a", max_retries=4) + await dead(store, 1, type="b")
        twin = (await dead(store, 1, queue="twin", max_retries=4))[0]
        moved = await store.requeue_dead("default", None, 10, time.time())
        retried = await store.retry(twin.id, time.time())
    assert {t.id for t in moved} == {a.id, b.id}
    by_id = {t.id: t for t in moved}
    assert by_id[a.id].max_retries == retried.max_retries


@async_test
async def test_requeue_dead_goes_in_batches_oldest_first_by_keyset(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        letters = await dead(store, 5)
        batches, after = [], None
        while batch := await store.requeue_dead("default", None, 2, time.time(), after):
            batches.append([t.id for t in batch])
            after = batch[-1].id
    ids = [t.id for t in letters]
    assert batches == [ids[0:2], ids[2:4], ids[4:5]]


@async_test
async def test_concurrent_requeues_move_each_dead_letter_once(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        await many_dead(store, 300)
        results = await asyncio.gather(
            *(store.requeue_dead("bulk", None, 300, time.time()) for _ in range(3))
        )
        ids = [t.id for r in results for t in r]
        states = await states_of(store)
    assert len(ids) == len(set(ids)) == 300
    assert set(states.values()) == {S.PENDING}


@async_test
async def test_a_requeued_task_is_not_dead_any_more_so_requeue_is_a_no_op(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        await dead(store, 1)
        assert len(await store.requeue_dead("default", None, 10, time.time())) == 1
        assert await store.requeue_dead("default", None, 10, time.time()) == []
        assert await store.requeue_dead("nowhere", None, 10, time.time()) == []


# -- count_dead and purge_dead -----------------------------------------------------------


@async_test
async def test_count_and_purge_dead_by_queue_and_type(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        await dead(store, 3, queue="q1", type="a")
        keep = await dead(store, 1, queue="q1", type="b") + await dead(store, 2, queue="q2")
        alive = [await in_state(store, s, queue="q1", type="a") for s in ALL_STATES]
        counts = (await store.count_dead("q1", None), await store.count_dead("q1", "a"))
        purged = await store.purge_dead("q1", "a")
        left = await states_of(store)
        again = await store.purge_dead("q1", "a")
    assert counts == (4, 3)
    assert (purged, again) == (3, 0)
    assert set(left) == {t.id for t in keep + alive}


@async_test
async def test_purge_dead_of_more_than_one_batch(pg_url: str) -> None:
    n = PURGE_BATCH * 2 + 7
    async with pg_store(pg_url) as store:
        await many_dead(store, n)
        assert await store.count_dead("bulk", None) == n
        assert await store.purge_dead("bulk", None) == n
        assert await store.count_dead("bulk", None) == 0


# -- purge_finished (retention) ----------------------------------------------------------


@async_test
async def test_purge_finished_deletes_old_completed_and_cancelled_only(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        everyone = [await in_state(store, s) for s in [*ALL_STATES, S.DEAD_LETTERED]]
        deleted = await store.purge_finished(time.time() + 60, 100)
        left = await states_of(store)
    assert deleted == 2
    assert sorted(left.values()) == sorted(
        s for s in [*ALL_STATES, S.DEAD_LETTERED] if s not in (S.COMPLETED, S.CANCELLED)
    )
    assert len(everyone) == len(left) + 2


@async_test
async def test_purge_finished_keeps_young_tasks_and_honours_the_limit(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        done = [await in_state(store, S.COMPLETED) for _ in range(5)]
        oldest = min(t.finished_at or 0 for t in done)
        assert await store.purge_finished(oldest - 1, 100) == 0  # none is old enough
        rounds = [await store.purge_finished(time.time() + 60, 2) for _ in range(4)]
    assert rounds == [2, 2, 1, 0]


class HourLater:
    """A clock an hour ahead: every finished task looks old."""

    def now(self) -> float:
        return time.time() + 3600


@async_test
async def test_retention_tick_deletes_what_is_past_its_age(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        await many_dead(store, 1)  # a dead letter that finished long before everything else
        everyone = [await in_state(store, s) for s in ALL_STATES]
        assert await Retention(store, SystemClock(), 60, 1).tick() == 0  # all younger than 60 s
        assert await Retention(store, HourLater(), 60, 1).tick() == 2
        left = await states_of(store)
    assert sorted(left.values()) == sorted(
        [*(s for s in ALL_STATES if s not in (S.COMPLETED, S.CANCELLED)), S.DEAD_LETTERED]
    )
    assert len(everyone) + 1 == len(left) + 2


@async_test
async def test_retention_of_0_keeps_tasks_forever(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        done = await in_state(store, S.COMPLETED)
        await asyncio.wait_for(Retention(store, HourLater(), 0, 0.01).run(), 5)  # returns at once
        assert await store.get(done.id) is not None


# -- the use cases -------------------------------------------------------------------------


@async_test
async def test_requeue_dead_letters_indexes_them_for_workers_at_once(
    pg_url: str, redis_url: str
) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        admin = Admin(
            store, queue, RedisIndex(queue.calls), RedisWorkers(queue.calls), SystemClock()
        )
        letters = await dead(store, 5, queue="jobs", type="a")
        await dead(store, 1, queue="jobs", type="b")
        assert await admin.requeue_dead_letters("jobs", "a", 3) == 3
        leased, _ = await queue.lease("jobs", ["a", "b"], [token() for _ in range(10)], 30)
        assert [r.id for r in leased] == [t.id for t in letters[:3]]
        assert await admin.requeue_dead_letters("jobs", "", 0) == 3  # the rest, every type
        assert await store.count_dead("jobs", None) == 0


@pytest.mark.parametrize(
    ("queue", "task_type", "limit", "field"),
    [("", "", 0, "queue"), ("bad queue", "", 0, "queue"), ("q", "", -1, "limit"),
     ("q", "no spaces", 0, "task_type")],
)  # fmt: skip
@async_test
async def test_requeue_dead_letters_validates_its_request(
    pg_url: str, redis_url: str, queue: str, task_type: str, limit: int, field: str
) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as rq:
        with pytest.raises(DtqError) as caught:
            await Admin(
                store, rq, RedisIndex(rq.calls), RedisWorkers(rq.calls), SystemClock()
            ).requeue_dead_letters(queue, task_type, limit)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == [field]


@async_test
async def test_purge_dead_letters_needs_confirmation_and_can_count_first(
    pg_url: str, redis_url: str
) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        admin = Admin(
            store, queue, RedisIndex(queue.calls), RedisWorkers(queue.calls), SystemClock()
        )
        await dead(store, 2, queue="jobs")
        with pytest.raises(DtqError) as caught:
            await admin.purge_dead_letters("jobs", "", confirm=False)
        assert (caught.value.code, caught.value.reason) == (
            Code.INVALID_ARGUMENT,
            "CONFIRMATION_REQUIRED",
        )
        assert [v.field for v in caught.value.violations] == ["confirm"]
        assert await admin.purge_dead_letters("jobs", "", False, validate_only=True) == 2
        assert await admin.purge_dead_letters("jobs", "", confirm=True) == 2
        assert await store.count_dead("jobs", None) == 0
