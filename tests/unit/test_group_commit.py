"""Group commit: concurrent calls share flushes (dtq/adapters/group_commit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from dtq.adapters.group_commit import GroupCommit


class Recorder:
    """A flush that records its batches and how many run at once."""

    def __init__(self, answer: Callable[[int], int | BaseException] = lambda c: c * 10) -> None:
        self.answer = answer
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, calls: list[int]) -> list[int | BaseException]:
        self.batches.append(list(calls))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(0.005)  # a database round trip
            return [self.answer(c) for c in calls]
        finally:
            self.running -= 1


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


async def call_all(group: GroupCommit[int, int], calls: range) -> list[int | BaseException]:
    return await asyncio.gather(*(group(c) for c in calls), return_exceptions=True)


def test_a_lone_call_flushes_alone() -> None:
    flush = Recorder()
    assert run(GroupCommit(flush)(7)) == 70
    assert flush.batches == [[7]]


def test_concurrent_callers_share_flushes() -> None:
    flush = Recorder()
    results = run(call_all(GroupCommit(flush, max_inflight=1), range(100)))
    assert results == [c * 10 for c in range(100)]
    # The first call flushes alone; everything queued meanwhile goes in the next flush.
    assert flush.batches == [[0], list(range(1, 100))]


def test_every_call_is_flushed_exactly_once() -> None:
    flush = Recorder()
    run(call_all(GroupCommit(flush, max_inflight=3, max_calls=16), range(500)))
    flushed = sorted(c for batch in flush.batches for c in batch)
    assert flushed == list(range(500))
    assert len(flush.batches) < 500 / 4
    assert max(len(b) for b in flush.batches) <= 16


@pytest.mark.parametrize("max_inflight", [1, 2, 4])
def test_max_inflight_is_respected(max_inflight: int) -> None:
    flush = Recorder()
    run(call_all(GroupCommit(flush, max_inflight=max_inflight, max_calls=8), range(200)))
    assert flush.most_running == max_inflight


def test_results_are_routed_to_their_callers() -> None:
    flush = Recorder(answer=lambda c: c * c)

    async def scenario() -> list[tuple[int, int]]:
        group = GroupCommit(flush, max_inflight=2)

        async def one(c: int) -> tuple[int, int]:
            await asyncio.sleep((c % 7) * 0.001)  # arrive in a scrambled order
            return c, await group(c)

        return await asyncio.gather(*(one(c) for c in range(60)))

    for call, result in run(scenario()):
        assert result == call * call


def test_an_exception_goes_only_to_its_caller() -> None:
    flush = Recorder(answer=lambda c: ValueError(c) if c % 3 == 0 else c)
    results = run(call_all(GroupCommit(flush, max_inflight=1), range(30)))
    for call, result in enumerate(results):
        if call % 3 == 0:
            assert isinstance(result, ValueError)
            assert result.args == (call,)
        else:
            assert result == call


def test_a_failing_flush_fails_every_call_in_it_and_later_calls_recover() -> None:
    attempts: list[list[int]] = []

    async def flush(calls: list[int]) -> list[int | BaseException]:
        attempts.append(calls)
        await asyncio.sleep(0.001)
        if len(attempts) == 2:
            raise ConnectionError("database went away")
        return list(calls)

    async def scenario() -> tuple[list[int | BaseException], int]:
        group = GroupCommit(flush, max_inflight=1)
        first = await call_all(group, range(10))
        return first, await group(99)

    first, later = run(scenario())
    assert first[0] == 0
    assert all(isinstance(r, ConnectionError) for r in first[1:])
    assert later == 99


def test_a_cancelled_caller_does_not_break_the_flush() -> None:
    flush = Recorder()

    async def scenario() -> list[int | BaseException]:
        group = GroupCommit(flush, max_inflight=1)
        calls = [asyncio.ensure_future(group(c)) for c in range(5)]
        await asyncio.sleep(0)
        calls[3].cancel()
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(scenario())
    assert isinstance(results[3], asyncio.CancelledError)
    assert [results[i] for i in (0, 1, 2, 4)] == [0, 10, 20, 40]
