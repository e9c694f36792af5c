"""The attempt log on a real PostgreSQL: the write that records a failure,
an expired lease or a handed-back lease appends the attempt; completing writes
nothing to it; the log keeps the newest ATTEMPT_LOG_SIZE; only a single task's
full read returns it."""

from __future__ import annotations

import time

import pytest

from dtq.adapters.pg_store import PgStore
from dtq.domain import attempts
from dtq.domain.model import Attempt, TaskError, TaskFilter, TaskState
from tests.integration.helpers import async_test, new_task, pg_store
from tests.integration.test_pg_store import insert_one, lease_one, ref, to

pytestmark = pytest.mark.usefixtures("clean")
S = TaskState


def boom(n: int) -> TaskError:
    return TaskError(f"boom {n}", "ValueError", f"Traceback {n}\n" + "x" * 20_000)


async def fail_once(store: PgStore, task_id: object, n: int, then: TaskState = S.FAILED) -> None:
    running = await lease_one(store, task_id)  # type: ignore[arg-type]
    now = time.time()
    (moved,) = await store.fail([(ref(running), boom(n))], to(then, now), now)
    assert moved is not None
    assert moved.attempt_log is None  # the failure's write returns no log


@async_test
async def test_failures_are_logged_and_the_last_attempt_comes_from_the_row(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        task = await insert_one(store, new_task(max_retries=5))
        start = time.time()
        for n in (1, 2):
            await fail_once(store, task.id, n)
            await store.promote_due(time.time(), 100)
        running = await lease_one(store, task.id)
        (done,) = await store.complete([(ref(running), b"ok")], time.time())
        read = await store.get(task.id)
    assert done is not None and read is not None
    assert read.attempt_log is not None
    log = read.attempt_log
    assert [a.attempt for a in log] == [1, 2]
    assert [a.error.message for a in log if a.error] == ["boom 1", "boom 2"]
    assert all(a.worker_id == "w-1" for a in log)
    for a in log:
        assert a.started_at is not None and a.ended_at is not None
        assert start - 1 < a.started_at <= a.ended_at < time.time() + 1
        assert a.error is not None and a.error.type == "ValueError"
        assert len(a.error.traceback) == attempts.LOGGED_TRACEBACK_LIMIT
    history = attempts.history(read)
    assert [a.attempt for a in history] == [1, 2, 3]
    last = history[-1]
    assert last == Attempt(3, "w-1", read.started_at, read.finished_at, None)


@async_test
async def test_a_dead_letter_is_its_last_logged_attempt(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        task = await insert_one(store, new_task(max_retries=0))
        await fail_once(store, task.id, 1, then=S.DEAD_LETTERED)
        read = await store.get(task.id)
    assert read is not None and read.state == S.DEAD_LETTERED
    history = attempts.history(read)
    assert [(a.attempt, a.error and a.error.message) for a in history] == [(1, "boom 1")]


@async_test
async def test_expired_and_released_leases_are_logged(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        task = await insert_one(store)
        running = await lease_one(store, task.id)
        await store.expire([ref(running)], to(S.PENDING), time.time())
        running = await lease_one(store, task.id)
        await store.release([ref(running)], time.time())
        running = await lease_one(store, task.id)
        read = await store.get(task.id)
    assert read is not None
    history = attempts.history(read)
    kinds = [(a.attempt, a.error.type if a.error else None) for a in history]
    assert kinds == [(1, "LeaseExpired"), (2, attempts.RELEASED), (3, None)]
    assert history[-1].ended_at is None  # running


@async_test
async def test_the_log_keeps_the_newest_attempts(pg_url: str) -> None:
    cap = attempts.ATTEMPT_LOG_SIZE
    async with pg_store(pg_url) as store:
        task = await insert_one(store, new_task(max_retries=cap + 5))
        for n in range(1, cap + 4):
            await fail_once(store, task.id, n)
            await store.promote_due(time.time(), 100)
        read = await store.get(task.id)
    assert read is not None and read.attempt_log is not None
    assert [a.attempt for a in read.attempt_log] == list(range(4, cap + 4))


@async_test
async def test_only_a_single_full_read_returns_the_log(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        task = await insert_one(store)
        await fail_once(store, task.id, 1)
        basic = await store.get(task.id, with_payload=False)
        (listed,) = await store.list_tasks(TaskFilter(), None, 10, True)
        await store.promote_due(time.time(), 100)
        leased = await lease_one(store, task.id)
        fresh = await insert_one(store)
        never_failed = await store.get(fresh.id)
    assert basic is not None and basic.attempt_log is None
    assert listed.attempt_log is None
    assert leased.attempt_log is None  # never on the lease path
    assert never_failed is not None and never_failed.attempt_log == ()
