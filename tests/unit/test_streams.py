"""The lease stream use cases (dtq/app/streams.py) over an in-memory Leasing:
open and adopt, outcomes, heartbeats, releases, capacity, stalls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import pytest

from dtq.app.dispatch import Dispatcher, Push, Session
from dtq.app.streams import LEASE_LOST, Streams
from dtq.domain.errors import DtqError
from dtq.domain.model import LeaseRef, Outcome, Subscription, TaskError, TaskState
from tests.support.memory_leasing import (
    FixedClock,
    MemoryLeasing,
    MemoryRegistry,
    MemoryStore,
    a_task,
    drain,
)

SUB = Subscription(("q",), ("t",))


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class World:
    def __init__(self) -> None:
        self.leasing = MemoryLeasing()
        self.dispatcher = Dispatcher(self.leasing)
        self.registry = MemoryRegistry()
        self.streams = Streams(
            self.leasing, self.dispatcher, self.registry, MemoryStore(self.leasing), FixedClock()
        )

    async def open(self, slots: int = 2, held: list[LeaseRef] | None = None) -> Session:
        session = await self.streams.open("w", SUB, slots, held or [])
        self.dispatcher.attach(session)
        return session

    async def lease(self, session: Session, n: int = 1) -> list[LeaseRef]:
        self.leasing.submit(*(a_task() for _ in range(n)))
        self.dispatcher.notify("q", "t")
        await self.dispatcher.round()
        return [LeaseRef(p.task.id, p.token) for push in drain(session) for p in push.leases]


def test_outcomes_are_acked_settle_the_tasks_and_free_the_slots() -> None:
    async def go() -> tuple[list[Push], dict[TaskState, int], int, int]:
        w = World()
        session = await w.open(slots=2)
        ok, bad = await w.lease(session, 2)
        outcomes = [
            Outcome(ok.task_id, ok.token, result=b"1"),
            Outcome(bad.task_id, bad.token, error=TaskError("boom", "ValueError")),
        ]
        await w.streams.on_outcomes(session, outcomes)
        acks = drain(session)
        states = {w.leasing.tasks[r.task_id].state: 1 for r in (ok, bad)}
        return acks, states, len(session.held), len(await w.lease(session, 2))

    acks, states, held, again = run(go())
    assert [len(p.acks) for p in acks] == [2]
    assert all(not isinstance(result, DtqError) for _, result in acks[0].acks)
    assert states == {TaskState.COMPLETED: 1, TaskState.DEAD_LETTERED: 1}
    assert (held, again) == (0, 2)


def test_a_slot_is_free_while_its_outcome_is_recorded_and_held_again_if_not() -> None:
    async def go() -> tuple[int, set[Any], list[Push], int]:
        w = World()
        session = await w.open(slots=1)
        (ref,) = await w.lease(session)
        recording = asyncio.Event()
        report = w.leasing.report

        async def slow_report(outcomes: Any) -> Any:
            recording.set()
            await asyncio.sleep(0.01)
            return await report(outcomes)

        w.leasing.report = slow_report  # type: ignore[method-assign]
        done = asyncio.create_task(
            w.streams.on_outcomes(session, [Outcome(ref.task_id, ref.token, result=b"1")])
        )
        await recording.wait()
        free_meanwhile = session.free
        await w.streams.heartbeat(session, [ref])  # the worker still names it
        revoked = {t for p in drain(session) for t, _ in p.revoked}
        await done
        w.leasing.report = report  # type: ignore[method-assign]
        (other,) = await w.lease(session)
        w.leasing.down = True
        with contextlib.suppress(DtqError):
            await w.streams.on_outcomes(session, [Outcome(other.task_id, other.token, b"1")])
        return free_meanwhile, revoked, drain(session), len(session.held)

    free_meanwhile, revoked, _, held = run(go())
    assert free_meanwhile == 1 and revoked == set()
    assert held == 1  # not recorded: the worker sends it again, the lease is its own


def test_an_outcome_for_a_lease_not_held_is_acked_with_its_error() -> None:
    async def go() -> Any:
        w = World()
        session = await w.open()
        (ref,) = await w.lease(session)
        w.leasing.lose(ref.task_id)
        await w.streams.on_outcomes(session, [Outcome(ref.task_id, ref.token, result=b"1")])
        return drain(session)[0].acks[0][1]

    error = run(go())
    assert isinstance(error, DtqError) and error.reason == "lease_lost"


def test_a_heartbeat_extends_held_leases_and_revokes_lost_ones() -> None:
    async def go() -> tuple[list[Push], set[Any], int]:
        w = World()
        session = await w.open(slots=3)
        kept, lost = await w.lease(session, 2)
        w.leasing.lose(lost.task_id)  # expired and reaped behind the worker's back
        stranger = LeaseRef(a_task().id, "0" * 32)
        await w.streams.heartbeat(session, [kept, lost, stranger])
        return drain(session), set(session.held), len(session.unconfirmed)

    sent, held, unconfirmed = run(go())
    revoked = {task_id: reason for p in sent for task_id, reason in p.revoked}
    assert set(revoked.values()) == {LEASE_LOST} and len(revoked) == 2
    assert len(held) == 1 and unconfirmed == 0  # the heartbeat named the kept one


def test_a_release_gives_the_task_back_and_survives_losing_redis() -> None:
    async def go() -> tuple[int, bool, int]:
        w = World()
        session = await w.open()
        (ref,) = await w.lease(session)
        await w.streams.release(session, [ref])
        back = len(w.leasing.ready[("q", "t")])
        (again,) = await w.lease(session, 0)  # the released task, under a new token
        assert again.task_id == ref.task_id and again.token != ref.token
        w.leasing.down = True
        await w.streams.release(session, [again])  # best effort: no error
        return back, ref.task_id not in session.held, len(session.held)

    assert run(go()) == (1, True, 0)


def test_a_reconnecting_worker_keeps_current_leases_only() -> None:
    async def go() -> tuple[set[Any], list[Any]]:
        w = World()
        first = await w.open(slots=2)
        current, stale = await w.lease(first, 2)
        await w.streams.close(first)
        w.leasing.lose(stale.task_id)
        w.leasing.tasks[stale.task_id] = replace(
            w.leasing.tasks[stale.task_id], state=TaskState.PENDING
        )
        second = await w.open(slots=2, held=[current, stale])
        return set(second.held), [r for p in drain(second) for r in p.revoked]

    held, revoked = run(go())
    assert len(held) == 1
    assert [reason for _, reason in revoked] == [LEASE_LOST]


def test_capacity_zero_drains_and_out_of_range_is_refused() -> None:
    async def go() -> tuple[bool, int]:
        w = World()
        session = await w.open(slots=2)
        w.streams.set_capacity(session, 0)
        draining = session.draining
        with pytest.raises(DtqError):
            w.streams.set_capacity(session, 10_001)
        return draining, len(await w.lease(session))

    assert run(go()) == (True, 0)


def test_a_stalled_stream_gets_leases_again_once_it_speaks() -> None:
    async def go() -> tuple[int, int]:
        w = World()
        session = await w.open(slots=1)
        await w.lease(session)
        await w.dispatcher.take_back_unread(asyncio.get_running_loop().time() + 60)
        stalled = len(await w.lease(session))
        w.streams.heard(session)  # e.g. a heartbeat arrives
        await w.dispatcher.round()
        return stalled, sum(len(p.leases) for p in drain(session))

    assert run(go()) == (0, 1)  # one slot: the first of the two ready tasks
