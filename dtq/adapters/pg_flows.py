"""Flows on PostgreSQL: chains, groups with a callback, child tasks.

A chain step is a task WAITING with `parent_id`; a group's callback is a task
WAITING with `callback_of`, and its group a `task_groups` row counting the
group's tasks not yet terminal. Whatever makes tasks terminal (completion,
dead-lettering, cancellation) calls `finished` in its own transaction, after
the write: children of completed parents are released (SCHEDULED, due now,
with the parent's result), waiting descendants of the others are cancelled
with a reason, and groups are counted down; the one transaction that takes a
group to 0 releases its callback with the group's outcomes. A kill of any
process therefore loses no release and makes none twice: each commits with
the parent's end, or not at all.

A step submitted after its parent (`after`) takes the parent's row lock
(FOR SHARE) in its insert's transaction: a completion waits for it and then
sees the step, or committed first, and then the step is moved on at once.
A step's `root_id` is its parent's root (or the parent) in that transaction.

A child task (WorkerService.SubmitChildTasks) has `parent_id` = the running
task that submitted it, locked FOR SHARE the same way (see pg_inserts). A
cancel takes the task's row FOR UPDATE, then `cancel_tree` cancels its
unfinished children, a level per statement, in the cancel's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Conn, Pg, Values
from dtq.adapters.pg_rows import as_datetime, new_row, new_task
from dtq.domain import outcomes, states
from dtq.domain.errors import DtqError
from dtq.domain.model import Cancelled, Family, NewTask, Task, TaskState

FIRST_CHILDREN = 10  # child ids a GetTask shows


async def finished(tx: Conn, done: Sequence[Task], now: float) -> int:
    """Move on what waited for `done` (tasks just made terminal, by this
    transaction). Returns how many tasks were released."""
    ended = [t for t in done if t.state in states.TERMINAL]
    if not ended:
        return 0
    at = as_datetime(now)
    completed = [t.id for t in ended if t.state == TaskState.COMPLETED]
    others = [t.id for t in ended if t.state != TaskState.COMPLETED]
    released = 0
    if completed:
        released += len(await tx.fetch(sql.RELEASE_CHILDREN, {"ids": completed, "now": at}))
    cancelled = await _cancel_descendants(tx, others, at)
    grouped = [t.id for t in ended if t.group_id is not None] + cancelled
    if grouped:
        released += await _count_down(tx, grouped, at)
    if released:
        await tx.fetch(sql.WAKE_DUE)
    return released


async def _count_down(tx: Conn, ids: list[uuid.UUID], at: object) -> int:
    fired = await tx.fetch(sql.COUNT_DOWN, {"ids": ids, "now": at})
    for callback, group in fired:
        found = await tx.fetch(sql.GROUP_OUTCOMES, {"group": group})
        await tx.fetch(sql.SET_PARENT_RESULT, {"id": callback, "result": outcomes.encode(found)})
    return len(fired)


async def admit(tx: Conn, new: Sequence[NewTask], now: float) -> set[uuid.UUID]:
    """After inserting chain steps `new`: lock their parents, NOT_FOUND for one
    missing (or another tenant's), set the steps' roots, and move steps of
    finished parents on. Returns the ids of the steps (to read them back)."""
    stepped = [t for t in new if t.after is not None]
    if not stepped:
        return set()
    parents = {t.after for t in stepped}
    locked = {pid: (state, tenant) for pid, state, tenant in await _lock(tx, parents)}
    for t in stepped:
        found = locked.get(t.after) if t.after else None
        if found is None or found[1] != t.tenant:
            raise DtqError.not_found("task", str(t.after))
    rooted = set(await tx.fetch(sql.SET_ROOTS, {"ids": [t.id for t in stepped]}))
    done = [pid for pid, (state, _) in locked.items() if state in states.TERMINAL]
    if not done:
        return rooted
    at = as_datetime(now)
    ok = [pid for pid in done if locked[pid][0] == TaskState.COMPLETED]
    bad = [pid for pid in done if locked[pid][0] != TaskState.COMPLETED]
    moved: list[uuid.UUID] = []
    if ok:
        moved += await tx.fetch(sql.RELEASE_CHILDREN, {"ids": ok, "now": at})
        await tx.fetch(sql.WAKE_DUE)
    moved += await _cancel_descendants(tx, bad, at)
    return rooted | set(moved)


async def cancel_tree(tx: Conn, ids: list[uuid.UUID], now: float) -> list[Cancelled]:
    """Cancel every unfinished descendant of the tasks `ids` (just cancelled
    by this transaction): children, their children..., and chain steps."""
    at = as_datetime(now)
    cancelled: list[Cancelled] = []
    while ids:
        found = await tx.fetch(sql.CANCEL_TREE, {"ids": ids, "now": at})
        level = [Cancelled(*row) for row in found]
        cancelled += level
        ids = [c.task.id for c in level]
    return cancelled


async def family(pg: Pg, task: Task, queues: Sequence[str] | None = None) -> Family:
    """What GetTask's FULL view shows of a task's children (in `queues`; None:
    any) and group."""
    args = {"id": task.id, "queues": list(queues) if queues else None}
    by_state = dict(await pg.fetch(sql.CHILD_COUNTS, args))
    ids = []
    if by_state:
        ids = await pg.fetch(sql.FIRST_CHILDREN, {**args, "limit": FIRST_CHILDREN})
    group = task.group_id or task.callback_of
    if group is None:
        return Family(by_state, ids)
    sizes = await pg.fetch(sql.GROUP_SIZE, {"id": group})
    size, remaining = sizes[0] if sizes else (0, 0)
    counts = dict(await pg.fetch(sql.GROUP_COUNTS, {"id": group}))
    return Family(by_state, ids, group, size, size - remaining, counts)


async def _cancel_descendants(tx: Conn, ids: list[uuid.UUID], at: object) -> list[uuid.UUID]:
    """Cancel the waiting descendants of `ids`, a level at a time (see pg_sql)."""
    cancelled: list[uuid.UUID] = []
    while ids:
        ids = await tx.fetch(sql.CANCEL_CHILDREN, {"ids": ids, "now": at})
        cancelled += ids
    return cancelled


async def _lock(tx: Conn, ids: set[uuid.UUID | None]) -> list[tuple[uuid.UUID, TaskState, str]]:
    return await tx.fetch(sql.LOCK_PARENTS, {"ids": sorted(i for i in ids if i is not None)})


class PgFlows:
    """`TaskStore.insert_group`."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def insert_group(
        self, members: Sequence[NewTask], callback: NewTask, now: float
    ) -> tuple[list[Task], Task]:
        """The group's tasks and its callback (WAITING), in one transaction."""
        assert callback.callback_of is not None
        rows = [new_row(t, now) for t in [*members, callback]]
        async with self.pg.transaction() as tx:
            args = {"id": callback.callback_of, "size": len(members), "callback": callback.id}
            args.update(tenant=callback.tenant, now=as_datetime(now))
            await tx.fetch(sql.ADD_GROUP, args)
            inserted = await tx.fetch(sql.INSERT_TASKS, {"rows": Values(rows, sql.INSERT_ROW)})
            if len(inserted) != len(rows):
                raise RuntimeError(f"{len(rows) - len(inserted)} tasks of a group not inserted")
        return [new_task(t, now) for t in members], new_task(callback, now)
