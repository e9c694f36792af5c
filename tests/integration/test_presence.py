"""Presence writes the live registry columns of every stream together, and
only what changed; a taken default port gives way, a taken explicit one does not."""

from __future__ import annotations

import uuid

import pytest

from dtq.adapters.redis_workers import RedisWorkers
from dtq.app.dispatch import Held, Session
from dtq.app.presence import Presence
from dtq.domain.model import Subscription, WorkerInfo
from dtq.listen import PortInUse, bind, probe
from tests.integration.helpers import async_test, redis_queue

pytestmark = pytest.mark.usefixtures("clean")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def info(worker_id: str) -> WorkerInfo:
    return WorkerInfo(worker_id, "h", 1, ("q",), ("t",), 4, "1", {}, 1000.0, 1000.0)


@async_test
async def test_presence_writes_changes_of_all_streams_in_one_go(redis_url: str) -> None:
    clock = Clock()
    a, b = (Session(w, Subscription(("q",), ("t",)), 4) for w in ("w-a", "w-b"))
    async with redis_queue(redis_url) as queue:
        q = RedisWorkers(queue.calls)
        for s in (a, b):
            await q.upsert(info(s.worker_id))
        presence = Presence(q, clock, lambda: [a, b])
        assert set(presence.changes()) == {a.id, b.id}, "a new stream is written once"
        await presence.flush()
        assert presence.changes() == {}, "nothing changed"

        a.held[uuid.uuid4()] = Held("q", "tok", 30.0)  # a lease granted
        clock.t += 0.3
        presence.saw(b)  # b sent a message, but under a second after the last write
        assert list(presence.changes()) == [a.id]
        await presence.flush()
        clock.t += 1.0
        presence.saw(b)
        assert list(presence.changes()) == [b.id]
        await presence.flush()
        got_a, got_b = await q.get("w-a"), await q.get("w-b")
    assert got_a is not None and got_b is not None
    assert (got_a.active_tasks, got_b.active_tasks) == (1, 0)
    assert got_b.last_seen_at == pytest.approx(1001.3)


def test_a_taken_default_port_gives_way_and_an_explicit_one_does_not(taken: int) -> None:
    _, got = bind(probe("127.0.0.1"), taken, False, "metrics port", "metrics_port")
    assert got != taken
    with pytest.raises(PortInUse) as caught:
        bind(probe("127.0.0.1"), taken, True, "metrics port", "metrics_port")
    assert (caught.value.port, caught.value.setting) == (taken, "metrics_port")
