"""Concurrent awaits of `AsyncClient.submit` coalesced into `BatchSubmitTasks`
calls: the same policy as `dtq.client.coalesce`, on one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dtq.client.coalesce import Answer, Batches, Coalescing, Pending, deliveries, settle_rest
from dtq.client.errors import DtqClientError
from dtq.v1 import task_service_pb2 as pb

SendBatch = Callable[[pb.BatchSubmitTasksRequest], Awaitable[pb.BatchSubmitTasksResponse]]
SendOne = Callable[[pb.SubmitTaskRequest], Awaitable[pb.SubmitTaskResponse]]


@dataclass(eq=False)
class _Awaited(Pending):
    done: asyncio.Event = field(default_factory=asyncio.Event)


class AsyncCoalescingSubmitter:
    """Coalesces concurrent `submit` awaits (see `dtq.client.coalesce`).

    Each batch is sent by a task of its own, so a caller cancelled while it
    waits cancels nobody else's submission (its own is dropped if not yet sent).
    """

    def __init__(self, send_batch: SendBatch, send_one: SendOne, limits: Coalescing | None = None):
        self._send_batch = send_batch
        self._send_one = send_one
        self._batches = Batches(limits or Coalescing())
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, request: pb.SubmitTaskRequest) -> pb.SubmitTaskResponse:
        """Submit one request; returns its own reply or raises its own error."""
        item = _Awaited(request)
        self._batches.queue.append(item)
        self._start()
        try:
            await item.done.wait()
        except asyncio.CancelledError:
            if item in self._batches.queue:
                self._batches.queue.remove(item)
            raise
        return item.outcome()

    def _start(self) -> None:
        while (batch := self._batches.take()) is not None:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Pending]) -> None:
        try:
            await self._deliver(batch)
        except BaseException as error:
            settle_rest(batch, error)
            if not isinstance(error, Exception):
                raise
        finally:
            for p in batch:
                assert isinstance(p, _Awaited)
                p.done.set()
            self._batches.done()
            self._start()

    async def _deliver(self, batch: list[Pending]) -> None:
        steps = deliveries(batch)
        call = next(steps)
        while True:
            answer: Answer
            try:
                if isinstance(call, pb.BatchSubmitTasksRequest):
                    answer = await self._send_batch(call)
                else:
                    answer = await self._send_one(call)
            except DtqClientError as error:
                answer = error
            try:
                call = steps.send(answer)
            except StopIteration:
                return
