"""Child tasks on the real PostgreSQL: parent and root, the parent's lease
checked in the insert's transaction, deduplication per parent, the cancel
cascade (in the cancel's transaction, also racing a submit), listing by
parent and root, and GetTask's family and group progress."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import time
import uuid
from pathlib import Path

import pytest

from dtq.adapters.pg_sql import Sql
from dtq.adapters.pg_store import PgStore
from dtq.domain import flows
from dtq.domain.errors import DtqError
from dtq.domain.model import LeaseRef, Submitted, Task, TaskFilter, TaskState
from dtq.domain.validation import SubmitSpec
from tests.integration.helpers import LIMITS, PAYLOAD_BYTES, async_test, new_task, pg_store
from tests.integration.test_flows import complete, step_after
from tests.integration.test_pg_store import insert_one, lease_one, ref

pytestmark = pytest.mark.usefixtures("clean")
S = TaskState
MIGRATION = Path(__file__).parents[2] / "migrations" / "versions" / "0013_children.py"


def specs(n: int, **spec: object) -> list[SubmitSpec]:
    """`n` children keyed as the worker's SDK keys them (`#N`), or by a given key."""
    fields: dict[str, object] = {"type": "child", "payload": PAYLOAD_BYTES, **spec}
    key = str(spec.get("idempotency_key", ""))
    return [SubmitSpec(**{**fields, "idempotency_key": key or f"#{i}"}) for i in range(n)]  # type: ignore[arg-type]


async def spawn(
    store: PgStore, parent: Task, n: int = 1, tenant: str = "default", **spec: object
) -> list[Submitted]:
    new = flows.children(parent.id, specs(n, **spec), LIMITS, time.time(), tenant)
    return await store.insert_children(ref(parent), tenant, new, time.time())


async def running(store: PgStore, task: Task | None = None) -> Task:
    return await lease_one(store, (task or await insert_one(store)).id)


@async_test
async def test_children_carry_their_parent_and_the_root_of_the_tree(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        top = await running(store)
        (child,) = [s.task for s in await spawn(store, top)]
        assert (child.parent_id, child.root_id, child.state) == (top.id, top.id, S.PENDING)
        assert child.idempotency_key == f"{top.id}/#0"
        (grandchild,) = [s.task for s in await spawn(store, await running(store, child))]
        assert (grandchild.parent_id, grandchild.root_id) == (child.id, top.id)
        stored = await store.get(grandchild.id)
        assert stored is not None and stored.root_id == top.id
        assert (await store.get(top.id)).root_id is None  # type: ignore[union-attr]


@async_test
async def test_chain_steps_get_the_first_step_as_root(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        first = await insert_one(store)
        second = await step_after(store, first.id)
        third = await step_after(store, second.id)  # type: ignore[attr-defined]
        assert second.root_id == first.id  # type: ignore[attr-defined]
        assert third.root_id == first.id  # type: ignore[attr-defined]
        assert third.parent_id == second.id  # type: ignore[attr-defined]


@async_test
async def test_only_the_current_attempt_of_a_running_parent_may_submit(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        pending = await insert_one(store)
        with pytest.raises(DtqError) as caught:
            new = flows.children(pending.id, specs(1), LIMITS, time.time(), "default")
            await store.insert_children(LeaseRef(pending.id, "0" * 32), "default", new, 0.0)
        assert caught.value.reason == "STALE_LEASE"
        parent = await running(store)
        stale = dataclasses.replace(parent, lease_token="f" * 32)
        with pytest.raises(DtqError) as caught:
            await spawn(store, stale)
        assert caught.value.reason == "STALE_LEASE"
        with pytest.raises(DtqError) as caught:
            await spawn(store, parent, tenant="other")
        assert caught.value.code.name == "NOT_FOUND"
        missing = dataclasses.replace(parent, id=uuid.uuid4())
        with pytest.raises(DtqError) as caught:
            await spawn(store, missing)
        assert caught.value.code.name == "NOT_FOUND"
        assert await store.list_tasks(TaskFilter(parent_id=parent.id), None, 10, False) == []


@async_test
async def test_a_retried_parent_gets_its_first_children_back(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        parent = await running(store)
        first = await spawn(store, parent, 3)
        again = await spawn(store, parent, 3)
        assert [s.deduplicated for s in again] == [True] * 3
        assert [s.task.id for s in again] == [s.task.id for s in first]
        with pytest.raises(DtqError) as caught:  # the same key for another child
            await spawn(store, parent, 1, type="other")
        assert caught.value.code.name == "ALREADY_EXISTS"
        listed = await store.list_tasks(TaskFilter(parent_id=parent.id), None, 10, False)
        assert len(listed) == 3


@async_test
async def test_cancelling_a_parent_cancels_its_unfinished_descendants(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        parent = await running(store)
        done, live, late, busy = [s.task for s in await spawn(store, parent, 4)]
        await complete(store, done.id, 1)
        later = await spawn(
            store, parent, 1, idempotency_key="later", scheduled_at=time.time() + 3600
        )
        busy = await running(store, busy)
        (grandchild,) = [s.task for s in await spawn(store, busy)]
        step = await step_after(store, live.id)
        cancelled = await store.cancel(parent.id, time.time())
        assert (cancelled.was, cancelled.token) == (S.RUNNING, parent.lease_token)
        gone = {c.task.id: c for c in cancelled.descendants}
        expected = {live.id, late.id, busy.id, grandchild.id, step.id, later[0].task.id}  # type: ignore[attr-defined]
        assert set(gone) == expected
        assert (gone[busy.id].was, gone[busy.id].token) == (S.RUNNING, busy.lease_token)
        for task_id in expected:
            got = await store.get(task_id)
            assert got is not None and got.state == S.CANCELLED and got.error is not None
        got = await store.get(grandchild.id)
        assert got is not None and got.error is not None
        assert got.error.type == "ParentCancelled" and str(busy.id) in got.error.message
        assert (await store.get(done.id)).state == S.COMPLETED  # type: ignore[union-attr]
        tree = await store.list_tasks(TaskFilter(root_id=parent.id), None, 20, False)
        assert {t.id for t in tree} == expected | {done.id}


@async_test
async def test_a_cancel_racing_a_submit_leaves_no_child_running(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        for _ in range(20):
            parent = await running(store)
            submit = asyncio.ensure_future(spawn(store, parent, 5))
            await store.cancel(parent.id, time.time())
            try:
                await submit
            except DtqError as error:
                assert error.reason == "STALE_LEASE"
            children = await store.list_tasks(TaskFilter(parent_id=parent.id), None, 10, False)
            assert all(c.state == S.CANCELLED for c in children)


@async_test
async def test_family_counts_children_by_state_and_a_groups_progress(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        parent = await running(store)
        kids = [s.task for s in await spawn(store, parent, 12)]
        await complete(store, kids[0].id, 1)
        family = await store.family(parent)
        assert family.children_by_state == {S.PENDING: 11, S.COMPLETED: 1}
        assert family.child_ids == [k.id for k in kids[:10]]
        assert family.group_id is None
        hidden = await store.family(parent, ["another-queue"])  # a caller limited to it
        assert (hidden.children_by_state, hidden.child_ids) == ({}, [])
        members = [new_task(type="g") for _ in range(3)]
        grouped, callback = flows.group(
            [SubmitSpec("g", PAYLOAD_BYTES) for _ in members],
            SubmitSpec("cb", PAYLOAD_BYTES),
            LIMITS,
            time.time(),
            "default",
        )
        tasks, waiting = await store.insert_group(grouped, callback, time.time())
        await complete(store, tasks[0].id, 1)
        await store.cancel(tasks[1].id, time.time())
        for task in (tasks[2], waiting):
            progress = await store.family(task)
            assert (progress.group_id, progress.group_total, progress.group_done) == (
                waiting.callback_of,
                3,
                2,
            )
            assert progress.group_by_state == {S.COMPLETED: 1, S.CANCELLED: 1, S.PENDING: 1}


@async_test
async def test_migration_0013_gives_older_chain_steps_their_root(pg_url: str) -> None:
    spec = importlib.util.spec_from_file_location("m0013", MIGRATION)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    async with pg_store(pg_url) as store:
        first = await insert_one(store)
        second = await step_after(store, first.id)
        third = await step_after(store, second.id)  # type: ignore[attr-defined]
        await store.pg.fetch(Sql("UPDATE tasks SET root_id = NULL RETURNING id", lambda r: r["id"]))
        await store.pg.fetch(Sql(migration.BACKFILL + " RETURNING t.id", lambda r: r["id"]))
        roots = [(await store.get(t.id)).root_id for t in (first, second, third)]  # type: ignore[attr-defined, union-attr]
        assert roots == [None, first.id, first.id]
