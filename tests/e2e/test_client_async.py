"""dtq.AsyncClient against real processes: the same surface as Client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from dtq import AsyncClient
from dtq.client import NotFound, Submission, TaskCancelled, TaskFailed, TaskState
from tests.conftest import Server, WorkerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "manager")]
Scenario = Callable[[AsyncClient], Awaitable[None]]


def run(server: Server, scenario: Scenario) -> None:
    async def main() -> None:
        async with AsyncClient(server.address) as client:
            await scenario(client)

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.fixture
def worker(start_worker: WorkerFactory) -> None:
    start_worker("--concurrency", "4")


def test_submit_and_await_the_result(server: Server, worker: None) -> None:
    async def scenario(client: AsyncClient) -> None:
        handle = await client.submit("test_task", {"message": "async"}, priority="high")
        assert await handle.result(timeout=20) == {"message": "async", "attempt": 1}
        assert (await handle.refresh()).state == TaskState.COMPLETED
        many = await client.submit_many([Submission("noop") for _ in range(5)])
        assert [await h.result(timeout=20) for h in many] == [None] * 5

    run(server, scenario)


def test_failure_cancel_and_timeout(server: Server, worker: None) -> None:
    async def scenario(client: AsyncClient) -> None:
        failing = await client.submit("test_task", {"fail": True, "permanent": True})
        with pytest.raises(TaskFailed) as caught:
            await failing.result(timeout=20)
        assert caught.value.error_type == "PermanentError"
        slow = await client.submit("test_task", {"sleep_duration": 30})
        with pytest.raises(TimeoutError):
            await slow.result(timeout=0.3)
        await slow.cancel()
        with pytest.raises(TaskCancelled):
            await slow.result()

    run(server, scenario)


def test_reads_and_queues(server: Server) -> None:
    async def scenario(client: AsyncClient) -> None:
        await client.submit_many([Submission("noop", queue="aio") for _ in range(7)])
        listed = [t async for t in client.list(queue="aio", page_size=3)]
        assert len({t.id for t in listed}) == 7
        async for task in client.watch(listed[0].id, timeout=5):
            assert task.state == TaskState.PENDING  # no worker: it waits
            break
        with pytest.raises(NotFound):
            await client.get(str(uuid.uuid4()))
        (stats,) = await client.queue_stats("aio")
        assert stats.pending == 7

    run(server, scenario)


def test_a_client_made_outside_the_loop_and_a_handler_reference(
    server: Server, worker: None
) -> None:
    from dtq import examples

    client = AsyncClient(server.address)  # at import time, as an App(client=...) would be

    async def main() -> object:
        examples.app.client = client
        try:
            handle = await examples.test_task.adelay(message="awaited")
            return await handle.result(timeout=20)
        finally:
            examples.app.client = None
            await client.close()

    assert asyncio.run(asyncio.wait_for(main(), 60)) == {"message": "awaited", "attempt": 1}
