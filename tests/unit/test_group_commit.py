"""Group commit: concurrent calls share flushes (dtq/adapters/group_commit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from dtq.adapters.group_commit import GroupCommit
from dtq.domain.errors import Code, DtqError, OutcomeUnknown


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


# -- a failing group retries its members alone ------------------------------------


class Refused(Exception):
    """An error of one call's data (a statement PostgreSQL refused)."""


def refuses(bad: set[int], gone: frozenset[int] = frozenset()) -> tuple[Any, list[list[int]]]:
    """A flush that fails as a whole when any call in it is in `bad` (like one
    SQL statement), and raises a connection error when it holds one of `gone`."""
    flushed: list[list[int]] = []

    async def flush(calls: list[int]) -> list[int | BaseException]:
        flushed.append(list(calls))
        await asyncio.sleep(0.001)
        if bad & set(calls):  # refused before anything of it ran
            raise Refused(sorted(bad & set(calls)))
        if gone & set(calls):
            raise OutcomeUnknown.lost("postgres", "connection lost")
        return [c * 10 for c in calls]

    return flush, flushed


def own(error: Exception) -> bool:
    return isinstance(error, Refused)


def test_a_refused_group_retries_each_call_alone() -> None:
    flush, flushed = refuses(bad={7, 40})
    results = run(call_all(GroupCommit(flush, max_inflight=1, alone=own), range(60)))
    for call, result in enumerate(results):
        if call in (7, 40):
            assert isinstance(result, Refused) and result.args == ([call],)
        else:
            assert result == call * 10, call
    assert list(range(1, 60)) in flushed  # they did share a group first
    assert [7] in flushed and [40] in flushed


def test_without_alone_a_refused_group_fails_every_call() -> None:
    flush, _ = refuses(bad={7})
    results = run(call_all(GroupCommit(flush, max_inflight=1), range(20)))
    assert all(isinstance(r, Refused) for r in results[1:])


def test_a_connection_error_is_not_retried_alone() -> None:
    flush, flushed = refuses(bad=set(), gone=frozenset({5}))
    results = run(call_all(GroupCommit(flush, max_inflight=1, alone=own), range(20)))
    assert all(isinstance(r, OutcomeUnknown) for r in results[1:])
    assert flushed == [[0], list(range(1, 20))]


def test_after_a_connection_error_alone_the_rest_are_not_attempted() -> None:
    # 3 is refused (the group splits); alone, 6 loses the connection: 6's outcome
    # is unknown, but 7.. were never sent, so theirs is a plain UNAVAILABLE.
    flush, flushed = refuses(bad={3}, gone=frozenset({6}))
    results = run(call_all(GroupCommit(flush, max_inflight=1, alone=own), range(10)))
    assert results[:3] == [0, 10, 20]
    assert isinstance(results[3], Refused)
    assert results[4:6] == [40, 50]
    assert isinstance(results[6], OutcomeUnknown)
    for result in results[7:]:
        assert isinstance(result, DtqError) and not isinstance(result, OutcomeUnknown)
        assert result.code == Code.UNAVAILABLE
    assert [7] not in flushed
