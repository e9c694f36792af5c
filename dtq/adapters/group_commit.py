"""Group commit: concurrent calls share one database transaction.

While a flush is running, new calls queue up; when it ends, the next flush takes
everything queued at once. Under light load each call flushes alone (no added
latency); under heavy load the batch grows and the cost per call falls, which
is what lets one PostgreSQL connection accept tens of thousands of tasks a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

C = TypeVar("C")  # one caller's request
R = TypeVar("R")  # one caller's result

# Takes the queued calls, returns one result (or exception) per call, in order.
Flush = Callable[[list[C]], Awaitable[list[R | BaseException]]]


class GroupCommit(Generic[C, R]):
    """Coalesces calls into at most `max_inflight` concurrent flushes."""

    def __init__(self, flush: Flush[C, R], max_inflight: int = 2, max_calls: int = 256) -> None:
        self._flush = flush
        self._max_inflight = max_inflight
        self._max_calls = max_calls
        self._queue: list[tuple[C, asyncio.Future[R]]] = []
        self._inflight = 0

    async def __call__(self, call: C) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        if self._inflight < self._max_inflight:
            self._start()
        return await future

    def _start(self) -> None:
        batch, self._queue = self._queue[: self._max_calls], self._queue[self._max_calls :]
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        task.add_done_callback(lambda _: None)

    async def _run(self, batch: list[tuple[C, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([call for call, _ in batch])
        except BaseException as exc:
            results = [exc] * len(batch)
        finally:
            self._inflight -= 1
            if self._queue and self._inflight < self._max_inflight:
                self._start()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
