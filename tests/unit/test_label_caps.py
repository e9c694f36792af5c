"""Caps on caller-chosen names: metric labels (dtq.metrics.LabelCap) and the
number of queues (dtq.app.queue_cap), over an in-memory index."""

from __future__ import annotations

import asyncio

import pytest

from dtq.app.queue_cap import QueueCap
from dtq.domain.errors import Code, DtqError
from dtq.metrics import OTHER, LabelCap


def test_the_first_names_keep_their_label_and_later_ones_share_other() -> None:
    cap = LabelCap(2)
    assert [cap(n) for n in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


class Index:
    def __init__(self, *queues: str) -> None:
        self.names = set(queues)
        self.reads = 0
        self.down = False

    async def queues(self) -> set[str]:
        self.reads += 1
        if self.down:
            raise DtqError(Code.UNAVAILABLE, "REDIS_UNAVAILABLE", "down")
        return set(self.names)

    async def add(self, queues: list[str]) -> None:
        if self.down:
            raise DtqError(Code.UNAVAILABLE, "REDIS_UNAVAILABLE", "down")
        self.names |= set(queues)


def test_new_queues_are_refused_past_the_cap_and_known_ones_never() -> None:
    async def go() -> None:
        now = [0.0]
        index = Index("a", "b")
        cap = QueueCap(index, 3, refresh=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
        await cap.check(["a", "c"])  # room for one more, now known to every server
        assert index.names == {"a", "b", "c"}
        with pytest.raises(DtqError) as refused:
            await cap.check(["d"])
        assert (refused.value.code, refused.value.reason) == (
            Code.RESOURCE_EXHAUSTED,
            "TOO_MANY_QUEUES",
        )
        reads = index.reads
        await cap.check(["a", "b", "c"])  # known: no read at all
        assert index.reads == reads
        index.names = {"a"}  # two were deleted elsewhere
        now[0] += 1.5
        await cap.check(["d"])
        index.down = True
        now[0] += 1.5
        await cap.check(["x", "y", "z"])  # Redis down: let through

    asyncio.run(go())
