"""Submitting tasks: new rows through group commit, idempotency keys honoured."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import replace

import psycopg2.errors

from dtq.adapters import pg_flows
from dtq.adapters import pg_sql as sql
from dtq.adapters.group_commit import GroupCommit
from dtq.adapters.pg_conn import REFUSED, Conn, Pg, Values, own_error, refused
from dtq.adapters.pg_rows import as_datetime, new_row, new_task
from dtq.domain.errors import STALE_LEASE, Code, DtqError
from dtq.domain.model import LeaseRef, NewTask, Submitted, Task, TaskState

InsertCall = tuple[Sequence[NewTask], float]
Key = tuple[str, str, str | None]  # (tenant, queue, idempotency key)


def reused() -> DtqError:
    """An idempotency key already used for a different request in the tenant's queue."""
    return DtqError(
        Code.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
        "idempotency key was already used for a different request in this queue",
    )


def stale(task_id: uuid.UUID) -> DtqError:
    return DtqError.failed_precondition(
        STALE_LEASE,
        f"task {task_id} is not running under this lease: only its current "
        "attempt may submit children",
    )


class _Conflicted(Exception):
    """Calls of a flush that reused a key for a different request (rolls it back)."""

    def __init__(self, calls: set[int]) -> None:
        self.calls = calls


class PgInserts:
    """`TaskStore.insert`."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg
        # One flush at a time: calls that arrive meanwhile share the next one.
        # More in flight made batches of one (measured: 96% of flushes) and
        # cost more CPU per task than PostgreSQL saved in waiting.
        # A flush refused for one call's data is retried call by call.
        self._insert = GroupCommit[InsertCall, list[Submitted]](
            self._flush, max_inflight=1, alone=own_error
        )

    async def insert(self, new: Sequence[NewTask], now: float) -> list[Submitted]:
        try:
            return await self._insert((new, now))
        except REFUSED as error:
            raise refused(error) from error

    async def insert_children(
        self, parent: LeaseRef, tenant: str, new: Sequence[NewTask], now: float
    ) -> list[Submitted]:
        """Children of a running task, in one transaction that holds the
        parent's row (FOR SHARE): NOT_FOUND unless it exists in `tenant`,
        STALE_LEASE unless it is RUNNING under `parent.token`."""
        try:
            async with self.pg.transaction() as tx:
                found = await tx.fetch(sql.LOCK_LEASED_PARENT, {"id": parent.task_id})
                if not found or found[0][1] != tenant:
                    raise DtqError.not_found("task", str(parent.task_id))
                state, _, token, root = found[0]
                if state != TaskState.RUNNING or token != parent.token:
                    raise stale(parent.task_id)
                children = [replace(t, child_of=parent.task_id, root_id=root) for t in new]
                done = await _try_insert(tx, [(children, now)], [0])
        except _Conflicted:
            raise reused() from None
        except REFUSED as error:
            raise refused(error) from error
        return done[0]

    async def _flush(self, calls: list[InsertCall]) -> list[list[Submitted] | BaseException]:
        """A flush is one INSERT in autocommit. With idempotency keys, one look
        first: when none is stored yet, the INSERT without ON CONFLICT, so that
        a key taken meanwhile fails it whole. A stored or racing key, or a
        `unique_for`, and the lookups and the insert share a transaction."""
        tasks = [t for new, _ in calls for t in new]
        if any(t.unique or t.after for t in tasks):
            return await self._flush_keyed(calls)
        statement = sql.INSERT_TASKS
        if keys := sorted({_key(t) for t in tasks if t.idempotency_key}):
            if await self.pg.fetch(sql.ANY_KEY, {"keys": Values(keys, sql.KEY_ROW)}):
                return await self._flush_keyed(calls)
            statement = sql.INSERT_FRESH
        rows = [new_row(t, now) for new, now in calls for t in new]
        try:
            inserted = await self.pg.fetch(statement, {"rows": Values(rows, sql.INSERT_ROW)})
        except psycopg2.errors.UniqueViolation:  # a key taken since the look
            return await self._flush_keyed(calls)
        if len(inserted) != len(rows):  # ids are fresh uuid7s: nothing can conflict
            raise RuntimeError(f"{len(rows) - len(inserted)} new tasks were not inserted")
        return [[Submitted(new_task(t, now), False) for t in new] for new, now in calls]

    async def _flush_keyed(self, calls: list[InsertCall]) -> list[list[Submitted] | BaseException]:
        results: list[list[Submitted] | BaseException] = [reused() for _ in calls]
        live = list(range(len(calls)))
        while live:
            try:
                async with self.pg.transaction() as tx:
                    done = await _try_insert(tx, calls, live)
            except _Conflicted as conflict:  # rolled back: again without those calls
                live = [i for i in live if i not in conflict.calls]
                continue
            for i, subs in done.items():
                results[i] = subs
            return results
        return results


async def _try_insert(
    tx: Conn, calls: list[InsertCall], live: list[int]
) -> dict[int, list[Submitted]]:
    """Insert the tasks of calls `live` whose keys are new; raises `_Conflicted`
    when any call reused a key for a different request."""
    wanted = [(t, calls[i][1]) for i in live for t in calls[i][0]]
    keyed: set[Key] = {_key(t) for t, _ in wanted if t.idempotency_key}
    existing = await _by_keys(tx, keyed) if keyed else {}
    fresh = [(t, now) for t, now in wanted if _key(t) not in existing]
    same = await _unique_matches(tx, fresh)
    fresh = [(t, now) for t, now in fresh if t.id not in same]
    inserted: set[uuid.UUID] = set()
    changed: dict[uuid.UUID, Task] = {}
    if fresh:
        rows = Values([new_row(t, now) for t, now in fresh], sql.INSERT_ROW)
        inserted = set(await tx.fetch(sql.INSERT_TASKS, {"rows": rows}))
    moved = await pg_flows.admit(tx, [t for t, _ in fresh if t.id in inserted], calls[0][1])
    if moved:
        changed = {t.id: t for t in await tx.fetch(sql.GET_TASKS_FULL, {"ids": list(moved)})}
    lost = {_key(t) for t, _ in fresh if t.id not in inserted}
    if lost:  # a key another transaction inserted meanwhile
        existing.update(await _by_keys(tx, lost))
    done: dict[int, list[Submitted]] = {}
    conflicted: set[int] = set()
    for i in live:
        subs, now = [], calls[i][1]
        for t in calls[i][0]:
            if t.id in inserted:
                subs.append(Submitted(changed.get(t.id) or new_task(t, now), False))
                continue
            if t.id in same:
                subs.append(Submitted(same[t.id], True))
                continue
            prior, prior_hash = existing[_key(t)]
            if prior_hash != t.request_hash:
                conflicted.add(i)
            subs.append(Submitted(prior, True))
        done[i] = subs
    if conflicted:
        raise _Conflicted(conflicted)
    return done


def _key(t: NewTask) -> Key:
    return (t.tenant, t.queue, t.idempotency_key)


async def _by_keys(tx: Conn, keys: set[Key]) -> dict[Key, tuple[Task, bytes]]:
    found: dict[Key, tuple[Task, bytes]] = {}
    for tenant, queue in {(t, q) for t, q, _ in keys}:
        wanted = [k for t, q, k in keys if (t, q) == (tenant, queue)]
        args = {"tenant": tenant, "queue": queue, "keys": wanted}
        for task, digest in await tx.fetch(sql.TASKS_BY_KEYS, args):
            found[(tenant, queue, task.idempotency_key)] = (task, bytes(digest or b""))
    return found


async def _unique_matches(tx: Conn, fresh: list[tuple[NewTask, float]]) -> dict[uuid.UUID, Task]:
    """New tasks with `unique` that an earlier task answers: id -> that task.
    Each (queue, digest) is locked for the transaction first, in one order
    (no deadlock between flushes), so concurrent submitters see each other;
    a twin in the same flush is answered by the first of them."""
    unique = [(t, now) for t, now in fresh if t.unique]
    if not unique:
        return {}
    locks = sorted({_lock_key(t) for t, _ in unique})
    for key in locks:
        await tx.fetch(sql.LOCK_UNIQUE, {"key": key})
    found: dict[uuid.UUID, Task] = {}
    first: dict[tuple[str, str, bytes], Task] = {}
    for t, now in unique:
        rule = t.unique
        assert rule is not None
        twin = first.get((t.tenant, t.queue, rule.digest))
        if twin is not None and (not rule.states or twin.state in rule.states):
            found[t.id] = twin
            continue
        states = [s.value for s in rule.states] or None
        args = {
            "tenant": t.tenant,
            "queue": t.queue,
            "digest": rule.digest,
            "since": as_datetime(now - rule.seconds),
        }
        matched = await tx.fetch(sql.UNIQUE_MATCH, {**args, "states": states})
        if matched:
            found[t.id] = matched[0]
        else:
            first[(t.tenant, t.queue, rule.digest)] = new_task(t, now)
    return found


def _lock_key(t: NewTask) -> int:
    """A signed 64-bit advisory lock key for (tenant, queue, digest)."""
    assert t.unique is not None
    mixed = hashlib.sha256(t.tenant_queue.encode() + b"\0" + t.unique.digest).digest()
    return int.from_bytes(mixed[:8], "big", signed=True)
