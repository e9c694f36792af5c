"""Group commit: concurrent calls share one database transaction.

While a flush is running, new calls queue up; when it ends, the next flush takes
everything queued at once. Under light load each call flushes alone (no added
latency); under heavy load the batch grows and the cost per call falls, which
is what lets one PostgreSQL connection accept tens of thousands of tasks a second.

A shared statement fails as a whole when one member's row is bad. With `alone`
given, a flush of several calls that fails with an error `alone` accepts (an
error of the statement, not of the connection) is run again one call at a time,
so the bad call gets its own error and the others commit. Only for flushes that
are one transaction: when one fails, none of it committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from dtq.domain.errors import DtqError

C = TypeVar("C")  # one caller's request
R = TypeVar("R")  # one caller's result
log = logging.getLogger(__name__)

# Takes the queued calls, returns one result (or exception) per call, in order.
Flush = Callable[[list[C]], Awaitable[list[R | BaseException]]]


class GroupCommit(Generic[C, R]):
    """Coalesces calls into at most `max_inflight` concurrent flushes."""

    def __init__(
        self,
        flush: Flush[C, R],
        max_inflight: int = 2,
        max_calls: int = 256,
        alone: Callable[[Exception], bool] | None = None,
    ) -> None:
        self._flush = flush
        self._alone = alone
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
            results = await self._results([call for call, _ in batch])
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

    async def _results(self, calls: list[C]) -> list[R | BaseException]:
        try:
            return await self._flush(calls)
        except Exception as exc:
            alone = self._alone
            if len(calls) == 1 or alone is None or not alone(exc):
                raise
            log.warning("group_split", extra={"calls": len(calls), "error": type(exc).__name__})
            return await self._one_by_one(calls, alone)

    async def _one_by_one(
        self, calls: list[C], alone: Callable[[Exception], bool]
    ) -> list[R | BaseException]:
        """Each call in its own flush, in order; after an error that is not the
        call's own (the connection), the rest are not attempted."""
        results: list[R | BaseException] = []
        for call in calls:
            try:
                results += await self._flush([call])
            except Exception as exc:
                results.append(exc)
                if not alone(exc):
                    return results + [_not_attempted(exc)] * (len(calls) - len(results))
        return results


def _not_attempted(error: BaseException) -> BaseException:
    """The error for a call never sent: the cause's code, never its "outcome unknown"."""
    if isinstance(error, DtqError):
        return DtqError(error.code, error.reason, error.message, retry_after=error.retry_after)
    return error
