"""Flows on the real PostgreSQL: chain steps and group callbacks released in
the transaction that ends what they wait for, once, under concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from google.protobuf import struct_pb2

from dtq.adapters.pg_sql import Sql
from dtq.adapters.pg_store import PgStore
from dtq.domain import flows
from dtq.domain.errors import DtqError
from dtq.domain.model import TaskError, TaskState
from dtq.domain.validation import SubmitSpec
from dtq.ports import Grant, Resolution
from tests.integration.helpers import LIMITS, async_test, new_task, pg_store, token
from tests.integration.test_pg_store import insert_one, lease_one, ref

pytestmark = pytest.mark.usefixtures("clean")
S = TaskState
_REMAINING = Sql("SELECT remaining FROM task_groups WHERE id = %(id)s", lambda r: r["remaining"])


def value(n: float) -> bytes:
    return struct_pb2.Value(number_value=n).SerializeToString()


async def step_after(store: PgStore, parent_id: object) -> object:
    return await insert_one(store, new_task(after=str(parent_id)))


async def complete(store: PgStore, task_id: object, result: float) -> None:
    running = await lease_one(store, task_id)  # type: ignore[arg-type]
    (done,) = await store.complete([(ref(running), value(result))], time.time())
    assert done is not None and done.state == S.COMPLETED


@async_test
async def test_completing_a_parent_releases_its_step_with_the_result(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        parent = await insert_one(store)
        child = await step_after(store, parent.id)
        grandchild = await step_after(store, child.id)
        assert (child.state, child.parent_id) == (S.WAITING, parent.id)
        await complete(store, parent.id, 42)
        released = await store.get(child.id)
        assert released is not None and released.state == S.SCHEDULED
        assert released.parent_result == value(42)
        assert (await store.get(grandchild.id)).state == S.WAITING  # type: ignore[union-attr]
        (promoted,) = await store.promote_due(time.time() + 1, 10)
        assert promoted.id == child.id and promoted.state == S.PENDING


@async_test
async def test_a_stale_completion_releases_nothing(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        parent = await insert_one(store)
        child = await step_after(store, parent.id)
        running = await lease_one(store, parent.id)
        stale = dataclasses.replace(ref(running), token="not-the-token")
        assert await store.complete([(stale, value(1))], time.time()) == [None]
        assert (await store.get(child.id)).state == S.WAITING  # type: ignore[union-attr]


@async_test
async def test_a_dead_lettered_parent_cancels_every_waiting_descendant(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        parent = await insert_one(store)
        chain = [await step_after(store, parent.id)]
        for _ in range(3):
            chain.append(await step_after(store, chain[-1].id))  # type: ignore[attr-defined]
        running = await lease_one(store, parent.id)
        error = TaskError("boom", "RuntimeError")
        await store.fail([(ref(running), error)], lambda t, e: Resolution(S.DEAD_LETTERED), 0.0)
        for step in chain:
            got = await store.get(step.id)  # type: ignore[attr-defined]
            assert got is not None and got.state == S.CANCELLED
            assert got.error is not None and got.error.type == "ParentNotCompleted"
            assert str(parent.id) in got.error.message
        late = await step_after(store, parent.id)
        assert late.state == S.CANCELLED  # type: ignore[attr-defined]


@async_test
async def test_a_step_after_a_missing_parent_is_not_found(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        with pytest.raises(DtqError) as caught:
            await step_after(store, "0190a6a8-0000-7000-8000-000000000000")
        assert caught.value.code.name == "NOT_FOUND"


@async_test
async def test_steps_submitted_while_parents_complete_are_each_released_once(
    pg_url: str,
) -> None:
    """The race of `then` with the parent's completion: no step left waiting."""
    async with pg_store(pg_url, pool_size=8) as store:
        parents = [await insert_one(store) for _ in range(40)]
        running = [await lease_one(store, p.id) for p in parents]

        async def finish(i: int) -> None:
            await store.complete([(ref(running[i]), value(i))], time.time())

        async def follow(i: int) -> object:
            return await step_after(store, parents[i].id)

        jobs = [finish(i) for i in range(40)] + [follow(i) for i in range(40)]
        results = await asyncio.gather(*jobs)
        for i, step in enumerate(results[40:]):
            got = await store.get(step.id)  # type: ignore[attr-defined]
            assert got is not None and got.state == S.SCHEDULED, i
            assert got.parent_result == value(i)


@async_test
async def test_a_group_releases_its_callback_once_under_concurrent_completions(
    pg_url: str,
) -> None:
    async with pg_store(pg_url, pool_size=8) as store:
        now = time.time()
        specs = [SubmitSpec("sq", b"") for _ in range(300)]
        members, callback = flows.group(specs, SubmitSpec("cb", b""), LIMITS, now, "default")
        tasks, waiting = await store.insert_group(members, callback, now)
        assert waiting.state == S.WAITING and waiting.callback_of is not None
        leased = [await lease_one(store, t.id) for t in tasks]
        chunks = [leased[i : i + 7] for i in range(0, len(leased), 7)]

        async def finish(chunk: list) -> None:  # type: ignore[type-arg]
            await store.complete([(ref(t), value(1)) for t in chunk], time.time())

        await asyncio.gather(*(finish(c) for c in chunks))
        got = await store.get(waiting.id)
        assert got is not None and got.state == S.SCHEDULED
        outcomes = struct_pb2.Value.FromString(got.parent_result or b"")
        items = outcomes.list_value.values
        assert len(items) == 300
        assert [i.struct_value["id"] for i in items] == [str(t.id) for t in tasks]
        assert {i.struct_value["state"] for i in items} == {"completed"}
        (row,) = await store.pg.fetch(_REMAINING, {"id": waiting.callback_of})
        assert row == 0


@async_test
async def test_retention_takes_a_group_with_its_callback(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        now = time.time()
        specs = [SubmitSpec("sq", b"") for _ in range(3)]
        members, callback = flows.group(specs, SubmitSpec("cb", b""), LIMITS, now, "default")
        tasks, waiting = await store.insert_group(members, callback, now)
        for t in tasks:
            await complete(store, t.id, 1)
        assert await store.purge_finished(time.time() + 60, 100) == 3  # the callback waits
        (row,) = await store.pg.fetch(_REMAINING, {"id": waiting.callback_of})
        assert row == 0
        (promoted,) = await store.promote_due(time.time() + 1, 10)
        await complete(store, promoted.id, 2)
        assert await store.purge_finished(time.time() + 60, 100) == 1
        assert await store.pg.fetch(_REMAINING, {"id": waiting.callback_of}) == []


@async_test
async def test_a_group_of_10000(pg_url: str) -> None:
    """N = 10,000: one insert transaction, completions in flushes of 500."""
    async with pg_store(pg_url, pool_size=8) as store:
        now = time.time()
        specs = [SubmitSpec("sq", b"") for _ in range(10_000)]
        members, callback = flows.group(specs, SubmitSpec("cb", b""), LIMITS, now, "default")
        started = time.perf_counter()
        tasks, waiting = await store.insert_group(members, callback, now)
        inserted = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(0, len(tasks), 500):
            grants = [Grant(t.id, token(), "w") for t in tasks[i : i + 500]]
            leased = await store.lease(grants, time.time())
            await store.complete([(ref(t), value(2)) for t in leased], time.time())
        finished = time.perf_counter() - started
        got = await store.get(waiting.id)
        assert got is not None and got.state == S.SCHEDULED
        assert (
            len(struct_pb2.Value.FromString(got.parent_result or b"").list_value.values) == 10_000
        )
        print(f"group of 10000: insert {inserted:.2f} s, lease+complete {finished:.2f} s")
