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
