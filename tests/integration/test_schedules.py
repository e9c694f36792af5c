"""Schedules on the real PostgreSQL and Redis: the repository (PgSchedules) and
the firing use case, with an injected clock; two firers at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
from prometheus_client import REGISTRY

from dtq.adapters.pg_schedules import PgSchedules
from dtq.app import caller
from dtq.app.schedules import Schedules
from dtq.app.tasks import Tasks
from dtq.domain.auth import Principal, Role
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import TaskFilter, TaskState
from dtq.domain.schedule import CatchUp, Overlap, Schedule, Template, Timing
from tests.integration.helpers import LIMITS, async_test, pg_store, redis_queue

pytestmark = pytest.mark.usefixtures("clean")
LATENESS = "dtq_schedule_fire_lateness_seconds"
START = float(int(time.time()) // 60 * 60 + 60)  # a whole minute, in the near future


@dataclass
class Clock:
    t: float = START

    def now(self) -> float:
        return self.t


@contextlib.asynccontextmanager
async def world(pg_url: str, redis_url: str, clock: Clock) -> AsyncIterator[Schedules]:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        tasks = Tasks(store, queue, clock, LIMITS)
        yield Schedules(PgSchedules(store.pg), tasks, clock, LIMITS, grace=5.0)


def every(seconds: float, name: str = "s", **fields: object) -> Schedule:
    base = Schedule(name, Timing(interval=seconds), Template("report", b"", "sched"))
    return replace(base, **fields)  # type: ignore[arg-type]


def sample(name: str, queue: str = "sched") -> float:
    return REGISTRY.get_sample_value(name, {"queue": queue}) or 0.0


async def fired_keys(s: Schedules) -> list[str]:
    tasks = await s.tasks.store.list_tasks(TaskFilter(queue="sched"), None, 1000, False)
    return sorted(t.idempotency_key or "" for t in tasks)


@async_test
async def test_create_get_list_update_delete(pg_url: str, redis_url: str) -> None:
    clock = Clock()
    async with world(pg_url, redis_url, clock) as s:
        created = await s.create(every(30, "a"))
        assert created.next_fire_at == START + 30  # multiples of 30 s, strictly after now
        assert created.created_at == pytest.approx(START)
        with pytest.raises(DtqError) as taken:
            await s.create(every(30, "a"))
        assert (taken.value.code, taken.value.reason) == (Code.ALREADY_EXISTS, "SCHEDULE_EXISTS")
        await s.create(every(60, "b"))
        await s.create(every(60, "c"))
        first, token = await s.page(2, "")
        rest, end = await s.page(2, token)
        assert [x.name for x in first + rest] == ["a", "b", "c"] and end == ""
        changed = await s.update(replace(every(30, "a"), overlap=Overlap.SKIP))
        assert changed.overlap == Overlap.SKIP and changed.next_fire_at == START + 30
        moved = await s.update(every(3600, "a"))
        assert moved.next_fire_at == START // 3600 * 3600 + 3600
        paused = await s.set_paused("a", True)
        assert paused.paused and paused.next_fire_at is None
        await s.delete("a")
        with pytest.raises(DtqError) as gone:
            await s.get("a")
        assert gone.value.code == Code.NOT_FOUND


@async_test
async def test_a_bad_template_names_the_field(pg_url: str, redis_url: str) -> None:
    async with world(pg_url, redis_url, Clock()) as s:
        bad = replace(every(30), task=Template("report", b"", "no spaces"))
        with pytest.raises(DtqError) as caught:
            await s.create(bad)
        assert [v.field for v in caught.value.violations] == ["schedule.task.queue"]


@async_test
async def test_fires_once_per_fire_time_and_never_early(pg_url: str, redis_url: str) -> None:
    clock = Clock()
    async with world(pg_url, redis_url, clock) as s:
        await s.create(every(10))
        clock.t = START + 9.99
        assert await s.fire_due() == START + 10
        assert await fired_keys(s) == []
        clock.t = START + 10.2
        fires, late = sample("dtq_schedule_fires_total"), sample(LATENESS + "_sum")
        assert await s.fire_due() == START + 20
        assert await s.fire_due() == START + 20  # again: nothing more
        (key,) = await fired_keys(s)
        assert key.startswith("schedule:s:")
        assert sample("dtq_schedule_fires_total") == fires + 1
        assert sample(LATENESS + "_sum") == pytest.approx(late + 0.2)
        got = await s.get("s")
        assert got.last_fire_at == START + 10 and got.last_task_state == TaskState.PENDING


@async_test
async def test_two_firers_at_once_submit_one_task_per_fire_time(
    pg_url: str, redis_url: str
) -> None:
    clock = Clock()
    async with world(pg_url, redis_url, clock) as one, world(pg_url, redis_url, clock) as two:
        for i in range(20):
            await one.create(every(1, f"s{i}", catch_up=CatchUp.ALL))
        for step in range(1, 4):
            clock.t = START + step + 0.5
            await asyncio.gather(one.fire_due(), two.fire_due(), one.fire_due())
        assert len(await fired_keys(one)) == 20 * 3
        assert len(set(await fired_keys(one))) == 20 * 3


@async_test
async def test_a_fire_recorded_lost_submits_the_same_task_again(
    pg_url: str, redis_url: str
) -> None:
    """A manager killed between the submit and the commit of its fire: the next
    try finds the same key and gets the first task back (deduplicated)."""
    clock = Clock()
    async with world(pg_url, redis_url, clock) as s:
        created = await s.create(every(10))
        clock.t = START + 10.1
        await s.fire_due()
        # Undo the record of the fire, as a crash before the commit would have.
        await s.store.update(replace(created, next_fire_at=START + 10), retime=True)
        await s.fire_due()
        assert len(await fired_keys(s)) == 1


@pytest.mark.parametrize(("policy", "count"), [("skip", 1), ("one", 2), ("all", 7)])
@async_test
async def test_catch_up_after_downtime(
    pg_url: str, redis_url: str, policy: str, count: int
) -> None:
    clock = Clock()
    async with world(pg_url, redis_url, clock) as s:
        await s.create(every(10, catch_up=CatchUp(policy)))
        clock.t = START + 72  # 10..60 missed (more than 5 s late), 70 on time
        await s.fire_due()
        assert len(await fired_keys(s)) == count
        assert (await s.get("s")).next_fire_at == START + 80


@async_test
async def test_overlap_skip_and_cancel_previous(pg_url: str, redis_url: str) -> None:
    clock = Clock()
    async with world(pg_url, redis_url, clock) as s:
        await s.create(every(10, "skip", overlap=Overlap.SKIP))
        await s.create(every(10, "cancel", overlap=Overlap.CANCEL_PREVIOUS))
        skipped = sample("dtq_schedule_skips_total")
        for step in (10, 20):
            clock.t = START + step + 0.1
            await s.fire_due()
        assert sample("dtq_schedule_skips_total") == skipped + 1
        tasks = await s.tasks.store.list_tasks(TaskFilter(queue="sched"), None, 100, False)
        by_key = {t.idempotency_key: t.state for t in tasks}
        skips = [k for k in by_key if k and k.startswith("schedule:skip:")]
        assert len(skips) == 1  # the second fire found the first still pending
        cancels = sorted(
            (k, v) for k, v in by_key.items() if k and k.startswith("schedule:cancel:")
        )
        assert [v for _, v in cancels] == [TaskState.CANCELLED, TaskState.PENDING]


@async_test
async def test_trigger_submits_now_and_is_the_last_run(pg_url: str, redis_url: str) -> None:
    clock = Clock()
    async with world(pg_url, redis_url, clock) as s:
        await s.create(every(3600))
        await s.set_paused("s", True)
        schedule, task = await s.trigger("s")
        assert schedule.last_task_id == task.id and schedule.paused
        assert task.queue == "sched" and task.type == "report"


@async_test
async def test_an_update_keeps_a_fire_committed_since_it_read(pg_url: str, redis_url: str) -> None:
    clock = Clock()
    async with world(pg_url, redis_url, clock) as s:
        read = await s.create(every(10))  # next fire START + 10
        clock.t = START + 10.1
        await s.fire_due()  # a manager fires meanwhile: next START + 20
        await s.store.update(replace(read, overlap=Overlap.ALLOW), retime=False)
        got = await s.get("s")
        assert got.next_fire_at == START + 20 and got.overlap == Overlap.ALLOW


@async_test
async def test_a_caller_limited_to_queues_sees_and_makes_only_theirs(
    pg_url: str, redis_url: str
) -> None:
    async with world(pg_url, redis_url, Clock()) as s:
        await s.create(every(30))  # queue "sched"
        token = caller.CALLER.set(Principal("key:k", Role.ADMIN, frozenset({"mine"})))
        try:
            with pytest.raises(DtqError) as hidden:
                await s.get("s")
            assert hidden.value.code == Code.NOT_FOUND
            assert (await s.page(10, ""))[0] == []
            with pytest.raises(DtqError) as denied:
                await s.create(every(30, "t"))
            assert denied.value.reason == "QUEUE_NOT_ALLOWED"
        finally:
            caller.CALLER.reset(token)
