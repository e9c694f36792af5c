"""RedisNotifier: ready notifications, cancels, schedule wake-ups and task
watches over real Redis pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from dtq.adapters.redis_conn import connect
from dtq.adapters.redis_index import RedisIndex
from dtq.adapters.redis_notify import RedisNotifier
from dtq.domain.model import Priority, Task, TaskState
from tests.integration.helpers import async_test, ready, redis_queue

pytestmark = pytest.mark.usefixtures("clean")
T = TypeVar("T")


@contextlib.asynccontextmanager
async def notifier(redis_url: str, **wants: bool) -> AsyncIterator[RedisNotifier]:
    """A started notifier, connected (or the test fails after 5 s)."""
    client = connect(redis_url, 2.0)
    listener = RedisNotifier(client, **wants)
    listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 5)
        yield listener
    finally:
        await listener.stop()
        await client.aclose()


async def heard(publish: Callable[[], Awaitable[Any]], inbox: asyncio.Queue[T]) -> T:
    """Publish until the message arrives (a subscription may still be in
    flight when the first one goes out); fail after 5 s."""
    async with asyncio.timeout(5):
        while True:
            await publish()
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(inbox.get(), 0.1)


def a_task(state: TaskState = TaskState.RUNNING, worker_id: str | None = "w-7") -> Task:
    return Task(
        uuid.uuid4(), "t", "q", Priority.MEDIUM, state, 1, 3, 60.0, 30.0, 0.0, 0.0,
        worker_id=worker_id,
    )  # fmt: skip


def own_queue() -> str:
    """A queue name no other test session uses: pub/sub channels are shared by
    every logical database of a Redis server."""
    return f"q-{uuid.uuid4().hex[:12]}"


def ready_inbox(listener: RedisNotifier, queue: str) -> asyncio.Queue[str]:
    """Task types the listener is woken for in `queue`."""
    inbox: asyncio.Queue[str] = asyncio.Queue()
    listener.on_ready.append(lambda q, task_type: q == queue and inbox.put_nowait(task_type))
    return inbox


@async_test
async def test_enqueue_wakes_ready_listeners_with_queue_and_type(redis_url: str) -> None:
    queue = own_queue()
    async with notifier(redis_url, ready=True) as listener, redis_queue(redis_url) as q:
        inbox = ready_inbox(listener, queue)
        got = await heard(lambda: q.enqueue([ready("email.send", queue=queue)]), inbox)
    assert got == "email.send"


@async_test
async def test_resuming_a_queue_wakes_every_type(redis_url: str) -> None:
    queue = own_queue()
    async with notifier(redis_url, ready=True) as listener, redis_queue(redis_url) as q:
        inbox = ready_inbox(listener, queue)
        assert await heard(lambda: RedisIndex(q.calls).set_paused(queue, False), inbox) == "*"


@async_test
async def test_cancel_reaches_the_cancel_listeners(redis_url: str) -> None:
    inbox: asyncio.Queue[tuple[str, uuid.UUID]] = asyncio.Queue()
    task, unowned = a_task(), a_task(worker_id=None)
    async with notifier(redis_url, cancels=True) as listener, redis_queue(redis_url) as q:
        mine = {task.id, unowned.id}
        listener.on_cancel.append(
            lambda worker, task_id: task_id in mine and inbox.put_nowait((worker, task_id))
        )
        assert await heard(lambda: q.publish_cancel(task), inbox) == ("w-7", task.id)
        assert await heard(lambda: q.publish_cancel(unowned), inbox) == ("", unowned.id)


@async_test
async def test_schedule_wake_up_carries_the_due_time(redis_url: str) -> None:
    inbox: asyncio.Queue[float] = asyncio.Queue()
    async with notifier(redis_url, schedule=True) as listener, redis_queue(redis_url) as q:
        due = 1_800_000_000 + random.random()  # told apart from other sessions' wake-ups
        listener.on_schedule.append(lambda when: when == due and inbox.put_nowait(when))
        assert await heard(lambda: q.wake_scheduler(due), inbox) == due


@async_test
async def test_watch_receives_the_new_states_of_one_task(redis_url: str) -> None:
    task, other = a_task(TaskState.RUNNING), a_task(TaskState.FAILED)
    async with notifier(redis_url) as listener, redis_queue(redis_url) as q:
        async with listener.watch(task.id) as changes:
            assert await heard(lambda: q.publish_changes([other, task]), changes) == "running"
            await q.publish_changes([dataclasses.replace(task, state=TaskState.COMPLETED)])
            while (state := await asyncio.wait_for(changes.get(), 5)) == "running":
                pass
            assert state == "completed"
        assert listener._watchers == {}


@async_test
async def test_a_listener_hears_nothing_it_did_not_ask_for(redis_url: str) -> None:
    calls: list[object] = []
    async with notifier(redis_url, cancels=True) as listener, redis_queue(redis_url) as q:
        listener.on_ready.append(lambda *a: calls.append(a))
        listener.on_schedule.append(calls.append)
        inbox: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        task = a_task()
        listener.on_cancel.append(lambda _, t: t == task.id and inbox.put_nowait(t))
        await q.enqueue([ready()])
        await q.wake_scheduler(1.0)
        await heard(lambda: q.publish_cancel(task), inbox)  # delivered after the others
    assert calls == []


@async_test
async def test_resync_callbacks_run_on_connect(redis_url: str) -> None:
    client = connect(redis_url, 2.0)
    listener = RedisNotifier(client, ready=True)
    resynced = asyncio.Event()
    listener.on_resync.append(resynced.set)
    listener.start()
    try:
        await asyncio.wait_for(resynced.wait(), 5)
        assert listener.connected.is_set()
    finally:
        await listener.stop()
        await client.aclose()
