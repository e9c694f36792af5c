"""Listing tasks page by page (Tasks.list over the real PgStore)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from dtq.app.tasks import Tasks
from dtq.domain import paging
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import TaskFilter, TaskState
from dtq.domain.validation import Limits
from dtq.ports import SystemClock
from tests.integration.helpers import async_test, new_task, pg_store, redis_queue

pytestmark = pytest.mark.usefixtures("clean")
EVERY = TaskFilter()


@contextlib.asynccontextmanager
async def tasks(pg_url: str, redis_url: str) -> AsyncIterator[Tasks]:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        yield Tasks(store, queue, SystemClock(), Limits())


@async_test
async def test_pages_walk_every_task_newest_first(pg_url: str, redis_url: str) -> None:
    async with tasks(pg_url, redis_url) as use:
        made = [
            s.task.id for s in await use.store.insert([new_task() for _ in range(7)], time.time())
        ]
        seen, token, pages = [], "", 0
        while True:
            page = await use.list(EVERY, 3, token, full=False)
            seen += [t.id for t in page.items]
            pages += 1
            if not (token := page.next_token):
                break
    assert seen == sorted(made, reverse=True)
    assert pages == 3


@async_test
async def test_a_token_for_other_filters_is_refused(pg_url: str, redis_url: str) -> None:
    async with tasks(pg_url, redis_url) as use:
        await use.store.insert([new_task() for _ in range(3)], time.time())
        page = await use.list(EVERY, 2, "", full=False)
        with pytest.raises(DtqError) as caught:
            await use.list(TaskFilter(state=TaskState.PENDING), 2, page.next_token, full=False)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_token"]


@async_test
async def test_a_forged_token_is_invalid_argument(pg_url: str, redis_url: str) -> None:
    fp = paging.fingerprint(None, None, None)  # well-formed, but its key is no task id
    async with tasks(pg_url, redis_url) as use:
        with pytest.raises(DtqError) as caught:
            await use.list(EVERY, 2, paging.encode("not-a-task-id", fp), full=False)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_token"]


@async_test
async def test_a_time_range_pages_through_its_tasks_only(pg_url: str, redis_url: str) -> None:
    base = time.time() + 1  # ahead of every id made so far: each id has its own time
    async with tasks(pg_url, redis_url) as use:
        made = []
        for second in range(10):
            (s,) = await use.store.insert([new_task(base + second)], base + second)
            made.append(s.task.id)
        window = TaskFilter(created_after=base + 2, created_before=base + 7)
        seen, token = [], ""
        while True:
            page = await use.list(window, 2, token, full=False)
            seen += [t.id for t in page.items]
            if not (token := page.next_token):
                break
        with pytest.raises(DtqError) as caught:  # a token of the unfiltered listing
            first = await use.list(EVERY, 2, "", full=False)
            await use.list(window, 2, first.next_token, full=False)
    assert seen == made[2:7][::-1]  # [after, before), newest first
    assert caught.value.code == Code.INVALID_ARGUMENT


@async_test
async def test_search_by_idempotency_key(pg_url: str, redis_url: str) -> None:
    async with tasks(pg_url, redis_url) as use:
        await use.store.insert([new_task(idempotency_key="order-1")], time.time())
        await use.store.insert(
            [new_task(idempotency_key="order-1", queue="other"), new_task()], time.time()
        )
        page = await use.list(TaskFilter(idempotency_key="order-1"), 10, "", full=False)
        none = await use.list(TaskFilter(idempotency_key="order-2"), 10, "", full=False)
    assert sorted(t.queue for t in page.items) == ["default", "other"]
    assert none.items == []
