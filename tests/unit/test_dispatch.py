"""The dispatcher (dtq/app/dispatch.py) over an in-memory Leasing: who gets
which leases, when it asks again, what it takes back. Deterministic: the tests
run dispatch rounds themselves instead of the dispatcher's loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from dtq.app.dispatch import MAX_GRANT, Dispatcher, Push, Session
from dtq.domain.model import Subscription
from tests.support.memory_leasing import MemoryLeasing, a_task, drain

SUB = Subscription(("q",), ("t",))


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def leased(session: Session) -> int:
    return sum(len(p.leases) for p in drain(session))


def test_free_slots_are_filled_in_one_grant_for_streams_alike() -> None:
    async def go() -> tuple[int, int, list[str]]:
        leasing = MemoryLeasing()
        leasing.submit(*(a_task() for _ in range(10)))
        dispatcher = Dispatcher(leasing)
        a, b = Session("w-a", SUB, 2), Session("w-b", SUB, 3)
        dispatcher.attach(a)
        dispatcher.attach(b)
        await dispatcher.round()
        return leased(a), leased(b), leasing.calls

    got_a, got_b, calls = run(go())
    assert (got_a, got_b) == (2, 3)
    assert calls == ["q"]  # one Redis call and one commit for both streams


def test_a_short_grant_clears_the_mark_until_a_notification() -> None:
    async def go() -> tuple[list[str], int, list[str], int]:
        leasing = MemoryLeasing()
        leasing.submit(a_task())
        dispatcher = Dispatcher(leasing)
        session = Session("w", SUB, 4)
        dispatcher.attach(session)
        await dispatcher.round()  # asks 4, gets 1: the queue is empty now
        first = leased(session)
        await dispatcher.round()  # nothing may be ready: no call at all
        quiet = list(leasing.calls)
        leasing.submit(a_task())
        dispatcher.notify("q", "t")
        await dispatcher.round()
        return quiet, first, leasing.calls, leased(session)

    quiet, first, calls, second = run(go())
    assert (first, quiet) == (1, ["q"])
    assert (calls, second) == (["q", "q"], 1)


def test_a_notification_for_any_type_marks_every_type_of_the_queue() -> None:
    async def go() -> int:
        leasing = MemoryLeasing()
        dispatcher = Dispatcher(leasing)
        session = Session("w", Subscription(("q",), ("t", "u")), 4)
        dispatcher.attach(session)
        await dispatcher.round()
        leasing.submit(a_task(type_="u"))
        dispatcher.notify("q", "*")  # e.g. a queue resumed
        await dispatcher.round()
        return leased(session)

    assert run(go()) == 1


def test_streams_of_other_work_get_only_their_own_tasks() -> None:
    async def go() -> tuple[set[str], set[str]]:
        leasing = MemoryLeasing()
        leasing.submit(
            *(a_task(type_="t") for _ in range(3)), *(a_task(type_="u") for _ in range(3))
        )
        dispatcher = Dispatcher(leasing)
        t, u = Session("w-t", SUB, 5), Session("w-u", Subscription(("q",), ("u",)), 5)
        dispatcher.attach(t)
        dispatcher.attach(u)
        await dispatcher.round()

        def types(s: Session) -> set[str]:
            return {lease.task.type for p in drain(s) for lease in p.leases}

        return types(t), types(u)

    assert run(go()) == ({"t"}, {"u"})


def test_one_stream_gets_at_most_max_grant_per_round() -> None:
    async def go() -> tuple[int, bool, int]:
        leasing = MemoryLeasing()
        leasing.submit(*(a_task() for _ in range(MAX_GRANT + 10)))
        dispatcher = Dispatcher(leasing)
        session = Session("w", SUB, 1000)
        dispatcher.attach(session)
        more = await dispatcher.round()
        first = leased(session)
        await dispatcher.round()
        return first, more, leased(session)

    first, more, rest = run(go())
    assert (first, more, rest) == (MAX_GRANT, True, 10)


def test_draining_and_full_streams_get_nothing() -> None:
    async def go() -> tuple[list[str], list[Push]]:
        leasing = MemoryLeasing()
        leasing.submit(*(a_task() for _ in range(5)))
        dispatcher = Dispatcher(leasing)
        session = Session("w", SUB, 2)
        dispatcher.attach(session)
        dispatcher.drain_all()
        await dispatcher.round()
        return leasing.calls, drain(session)

    calls, sent = run(go())
    assert calls == []
    assert [p.draining for p in sent] == [True]


def test_a_cancel_revokes_the_lease_and_frees_the_slot() -> None:
    async def go() -> tuple[list[Push], int]:
        leasing = MemoryLeasing()
        first, second = a_task(), a_task()
        leasing.submit(first)
        dispatcher = Dispatcher(leasing)
        session = Session("w", SUB, 1)
        dispatcher.attach(session)
        await dispatcher.round()
        drain(session)
        dispatcher.cancel("w", first.id)
        sent = drain(session)
        leasing.submit(second)
        dispatcher.notify("q", "t")
        await dispatcher.round()
        return sent, leased(session)

    sent, after = run(go())
    assert [p.revoked for p in sent] == [[(sent[0].revoked[0][0], "cancelled")]]
    assert after == 1


def test_leases_a_stream_never_names_are_taken_back_and_it_stalls() -> None:
    async def go() -> tuple[int, bool, int, int]:
        leasing = MemoryLeasing()
        leasing.submit(*(a_task() for _ in range(3)))
        dispatcher = Dispatcher(leasing, confirm_window=20.0)
        session = Session("w", SUB, 3)
        dispatcher.attach(session)
        await dispatcher.round()
        drain(session)
        now = asyncio.get_running_loop().time()
        await dispatcher.take_back_unread(now + 5)  # within the window: kept
        kept = len(session.held)
        await dispatcher.take_back_unread(now + 21)
        dispatcher.sweep()
        calls = len(leasing.calls)
        await dispatcher.round()  # a stalled stream is not given more
        return kept, session.stalled, len(leasing.released), len(leasing.calls) - calls

    kept, stalled, released, later = run(go())
    assert (kept, stalled, released, later) == (3, True, 3, 0)


def test_a_failing_grant_leaves_the_stream_to_a_later_round() -> None:
    async def go() -> tuple[int, int]:
        leasing = MemoryLeasing()
        leasing.submit(a_task())
        dispatcher = Dispatcher(leasing)
        session = Session("w", SUB, 1)
        dispatcher.attach(session)
        leasing.down = True
        await dispatcher.round()  # UNAVAILABLE: logged, not raised
        during = leased(session)
        leasing.down = False
        dispatcher.sweep()  # the safety sweep marks everything again
        await dispatcher.round()
        return during, leased(session)

    assert run(go()) == (0, 1)


def test_unnamed_leases_of_a_closed_stream_are_taken_back_unless_adopted() -> None:
    async def go() -> tuple[int, int, int]:
        leasing = MemoryLeasing()
        leasing.submit(*(a_task() for _ in range(2)))
        dispatcher = Dispatcher(leasing, reconnect_grace=5.0)
        killed = Session("w", SUB, 2)
        dispatcher.attach(killed)
        await dispatcher.round()
        drain(killed)
        dispatcher.detach(killed)  # the worker died as the leases were pushed
        back = Session("w", SUB, 0)  # ... or reconnected here and named one
        adopted = next(iter(killed.held.items()))
        back.held[adopted[0]] = adopted[1]
        dispatcher.attach(back)
        now = asyncio.get_running_loop().time()
        await dispatcher.take_back_unread(now + 1)  # within the grace: kept
        early = len(leasing.released)
        await dispatcher.take_back_unread(now + 6)
        await dispatcher.take_back_unread(now + 7)  # once only
        return early, len(leasing.released), len(back.held)

    assert run(go()) == (0, 1, 1)


def test_a_grant_in_flight_when_the_worker_stops_writing_goes_back_at_once() -> None:
    """The worker half-closed (SIGTERM, nothing running) while its grant was
    being committed: the leases cannot reach it, so they are not left RUNNING
    for the reconnect grace but handed back as soon as the grant returns."""

    class EndsDuringGrant(MemoryLeasing):
        session: Session | None = None

        async def grant_many(self, sub, queue, asks):  # type: ignore[no-untyped-def]
            granted = await super().grant_many(sub, queue, asks)
            assert self.session is not None
            self.session.end(True)  # the reader saw the end of the worker's stream
            return granted

    async def go() -> tuple[int, int, int]:
        leasing = EndsDuringGrant()
        leasing.submit(a_task())
        dispatcher = Dispatcher(leasing)
        session = leasing.session = Session("w", SUB, 1)
        dispatcher.attach(session)
        await dispatcher.round()
        return len(leasing.released), len(session.held), session.outbox.get_nowait()

    assert run(go()) == (1, 0, None)  # nothing pushed after the end


def test_a_worker_that_says_goodbye_gets_its_unnamed_leases_taken_back_at_once() -> None:
    async def go(goodbye: bool) -> int:
        leasing = MemoryLeasing()
        leasing.submit(*(a_task() for _ in range(3)))
        dispatcher = Dispatcher(leasing, reconnect_grace=5.0)
        session = Session("w", SUB, 3)
        dispatcher.attach(session)
        await dispatcher.round()
        drain(session)
        session.unconfirmed.pop(next(iter(session.held)))  # the one it named
        session.end(goodbye)
        dispatcher.detach(session)
        if session.goodbye:
            await dispatcher.said_goodbye(session)
        await dispatcher.take_back_unread(asyncio.get_running_loop().time() + 1)
        return len(leasing.released)

    assert run(go(goodbye=True)) == 2  # on their way to it when it closed: back now
    assert run(go(goodbye=False)) == 0  # a broken stream: the worker may reconnect


def test_a_throttled_type_is_looked_at_again_when_its_token_is_due() -> None:
    async def go() -> tuple[list[str], list[str], float]:
        leasing = MemoryLeasing()
        dispatcher = Dispatcher(leasing)
        session = Session("w", SUB, 4)
        dispatcher.attach(session)
        await dispatcher.round()  # nothing ready: the mark is cleared
        before = list(leasing.calls)
        leasing.submit(a_task())  # ready, but (say) held back by its rate
        loop = asyncio.get_running_loop()
        dispatcher._wake.clear()
        dispatcher.throttled("q", ["t"], 0.05)
        dispatcher.throttled("q", ["t"], 0.5)  # a later one does not replace it
        started = loop.time()
        await asyncio.wait_for(dispatcher._wake.wait(), 1.0)
        woke = loop.time() - started
        await dispatcher.round()
        await dispatcher.stop()
        return before, leasing.calls, woke

    before, calls, woke = run(go())
    assert before == ["q"]
    assert calls == ["q", "q"]  # woken by the timer, not by a notification
    assert 0.04 <= woke < 0.3
