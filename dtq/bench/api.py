"""The benchmark's view of a running system: async stubs, and completion
confirmed by the server (every submitted id listed as COMPLETED)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Collection
from dataclasses import dataclass

import grpc

from dtq.client import bearer
from dtq.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
)

NOOP = "noop"
PAGE = 1000  # the largest page ListTasks serves
POLL = 0.05  # seconds between two "is the queue drained?" checks
COMPLETED = task_pb2.Task.State.Value("STATE_COMPLETED")


class BenchError(RuntimeError):
    """The system under test did not do what the benchmark needs."""


@dataclass(frozen=True)
class Done:
    """Tasks confirmed COMPLETED by the server, with the server's timestamps (Unix s)."""

    created: list[float]
    started: list[float]
    finished: list[float]

    @property
    def last_finished(self) -> float:
        return max(self.finished)


def seconds(ts: object) -> float:
    return float(ts.ToNanoseconds()) / 1e9  # type: ignore[attr-defined]


class Api:
    """Async stubs over `connections` channels to the server, each its own TCP
    connection, as many client processes would have: a server started with
    `--processes N` gets its load spread by the kernel, per connection.
    `tasks` hands out their stubs in turn."""

    def __init__(self, address: str, connections: int = 1, api_key: str | None = None) -> None:
        self.address = address
        self.api_key = api_key  # sent as a bearer credential on every call
        options = [("grpc.use_local_subchannel_pool", 1)]  # no connection shared
        self.channels = [self.channel_to(options) for _ in range(connections)]
        self._stubs = itertools.cycle(
            [task_service_pb2_grpc.TaskServiceStub(c) for c in self.channels]
        )
        self.channel = self.channels[0]
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)

    def channel_to(self, options: list[tuple[str, int]]) -> grpc.aio.Channel:
        """A channel of its own to the server, with the bench's credential."""
        interceptors = bearer.async_interceptors(self.api_key) or None
        return grpc.aio.insecure_channel(self.address, options=options, interceptors=interceptors)

    @property
    def tasks(self) -> task_service_pb2_grpc.TaskServiceAsyncStub:
        return next(self._stubs)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    def request(self, queue: str) -> task_service_pb2.SubmitTaskRequest:
        return task_service_pb2.SubmitTaskRequest(type=NOOP, queue=queue)

    async def check_workers(self, queue: str) -> int:
        """How many registered workers take `noop` tasks from `queue`; fails when none."""
        reply = await self.admin.ListWorkers(
            admin_service_pb2.ListWorkersRequest(page_size=1000), timeout=10
        )
        serving = [w for w in reply.workers if queue in w.queues and NOOP in w.task_types]
        if not serving:
            raise BenchError(
                f"no worker takes {NOOP!r} tasks from queue {queue!r}: start one with "
                f"`dtq worker --queue {queue}` (the built-in examples include noop)"
            )
        return len(serving)

    async def outstanding(self, queue: str) -> int:
        """Tasks of `queue` not yet finished: pending and running (Redis), scheduled
        and retrying (PostgreSQL), as the server counts them."""
        reply = await self.admin.GetQueueStats(
            admin_service_pb2.GetQueueStatsRequest(queue=queue), timeout=10
        )
        return sum(s.pending + s.running + s.scheduled + s.retrying for s in reply.queues)

    async def completed(self, queue: str, ids: Collection[str]) -> Done:
        """Every task of `ids` found COMPLETED in `queue` (newest first, so the
        latest phase's tasks come first); raises BenchError if some are not."""
        wanted = set(ids)
        created: list[float] = []
        started: list[float] = []
        finished: list[float] = []
        token = ""
        for _ in range(10_000):  # pages; a bound, not a limit reached in practice
            reply = await self.tasks.ListTasks(
                task_service_pb2.ListTasksRequest(
                    queue=queue,
                    state=COMPLETED,
                    page_size=PAGE,
                    page_token=token,
                    view=task_pb2.TaskView.Value("TASK_VIEW_BASIC"),
                ),
                timeout=30,
            )
            for t in reply.tasks:
                if t.id in wanted:
                    wanted.discard(t.id)
                    created.append(seconds(t.created_at))
                    started.append(seconds(t.started_at))
                    finished.append(seconds(t.finished_at))
            token = reply.next_page_token
            if not wanted or not token:
                break
        if wanted:
            raise BenchError(f"{len(wanted)} of {len(ids)} tasks are not COMPLETED")
        return Done(created, started, finished)

    async def wait_completed(self, queue: str, ids: Collection[str], within: float) -> Done:
        """Wait until the queue is drained, then confirm every id COMPLETED."""
        deadline = time.monotonic() + within
        while True:
            if await self.outstanding(queue) == 0:
                try:
                    return await self.completed(queue, ids)
                except BenchError:
                    if time.monotonic() > deadline:
                        raise
            elif time.monotonic() > deadline:
                left = await self.outstanding(queue)
                raise BenchError(f"{left} tasks of queue {queue!r} unfinished after {within:g}s")
            await asyncio.sleep(POLL)
