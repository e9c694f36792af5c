"""A small in-memory `Leasing` of our own, for unit tests of the dispatcher
and the lease streams (dtq/app/dispatch.py, dtq/app/streams.py).

It keeps what the real one keeps in Redis and PostgreSQL, in dicts: ready
tasks per (queue, type) in submission order, and the leases held. No I/O, no
clock but the one given, so the tests are fast and deterministic. It also keeps
a registry and a store of the few calls `Streams` makes on them.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from dtq.app.dispatch import Push, Session
from dtq.app.leasing import deal
from dtq.domain.errors import DtqError
from dtq.domain.model import (
    Lease,
    LeaseRef,
    Outcome,
    Priority,
    Subscription,
    Task,
    TaskState,
    WorkerInfo,
)

_tokens = itertools.count(1)


def a_task(queue: str = "q", type_: str = "t", lease_seconds: float = 30.0) -> Task:
    return Task(
        uuid.uuid4(), type_, queue, Priority.MEDIUM, TaskState.PENDING, 0, 3, 60.0,
        lease_seconds, 0.0, 0.0,
    )  # fmt: skip


@dataclass
class MemoryLeasing:
    now: float = 1000.0
    ready: dict[tuple[str, str], list[Task]] = field(default_factory=lambda: defaultdict(list))
    tasks: dict[uuid.UUID, Task] = field(default_factory=dict)
    leases: dict[uuid.UUID, str] = field(default_factory=dict)  # task id -> token
    calls: list[str] = field(default_factory=list)  # grant_many calls, by queue
    released: list[LeaseRef] = field(default_factory=list)
    down: bool = False  # every call raises UNAVAILABLE, like losing Redis

    def submit(self, *tasks: Task) -> None:
        for task in tasks:
            self.tasks[task.id] = task
            self.ready[(task.queue, task.type)].append(task)

    def _check(self) -> None:
        if self.down:
            raise DtqError.unavailable("redis", "Redis is unreachable")

    async def grant_many(
        self, sub: Subscription, queue: str, asks: Sequence[tuple[str, int]]
    ) -> list[list[Lease]]:
        self._check()
        self.calls.append(queue)
        popped: list[Task] = []
        total = sum(n for _, n in asks)
        for task_type in sub.task_types:
            line = self.ready[(queue, task_type)]
            take, self.ready[(queue, task_type)] = (
                line[: total - len(popped)],
                line[total - len(popped) :],
            )
            popped += take
        out: list[list[Lease]] = [[] for _ in asks]
        for task, owner in zip(popped, deal([n for _, n in asks], len(popped)), strict=True):
            token = f"{next(_tokens):032x}"
            self.leases[task.id] = token
            running = replace(
                task, state=TaskState.RUNNING, worker_id=asks[owner][0], lease_token=token
            )
            self.tasks[task.id] = running
            out[owner].append(Lease(running, token, self.now + task.lease_duration))
        return out

    async def release(self, refs: Sequence[LeaseRef], revoked: bool = False) -> list[Task]:
        self._check()
        back = []
        for ref in refs:
            self.released.append(ref)
            if self.leases.get(ref.task_id) == ref.token:
                del self.leases[ref.task_id]
                task = replace(self.tasks[ref.task_id], state=TaskState.PENDING, lease_token=None)
                self.tasks[task.id] = task
                self.ready[(task.queue, task.type)].insert(0, task)
                back.append(task)
        return back

    async def report(self, outcomes: Sequence[Outcome]) -> list[Task | DtqError]:
        self._check()
        out: list[Task | DtqError] = []
        for o in outcomes:
            if self.leases.get(o.task_id) != o.token:
                out.append(DtqError.failed_precondition("lease_lost", "the lease is not held"))
                continue
            del self.leases[o.task_id]
            state = TaskState.COMPLETED if o.succeeded else TaskState.DEAD_LETTERED
            self.tasks[o.task_id] = replace(self.tasks[o.task_id], state=state, result=o.result)
            out.append(self.tasks[o.task_id])
        return out

    async def extend(
        self, queue: str, items: Sequence[tuple[LeaseRef, float]]
    ) -> list[float | None]:
        self._check()
        return [
            self.now + seconds if self.leases.get(ref.task_id) == ref.token else None
            for ref, seconds in items
        ]

    def lose(self, task_id: uuid.UUID) -> None:
        """The lease expired behind the worker's back (the reaper took it)."""
        self.leases.pop(task_id, None)


@dataclass
class MemoryRegistry:
    workers: dict[str, WorkerInfo] = field(default_factory=dict)

    async def upsert(self, worker: WorkerInfo) -> None:
        self.workers[worker.id] = worker

    async def touch(
        self, worker_id: str, active_tasks: int, draining: bool, now: float, tenant: str = "default"
    ) -> None:
        if worker_id in self.workers:
            self.workers[worker_id] = replace(
                self.workers[worker_id], active_tasks=active_tasks, draining=draining,
                last_seen_at=now,
            )  # fmt: skip

    async def get(self, worker_id: str, tenant: str = "default") -> WorkerInfo | None:
        return self.workers.get(worker_id)

    async def page(
        self, offset: int, limit: int, tenant: str | None = None
    ) -> tuple[list[WorkerInfo], int]:
        ordered = sorted(self.workers.values(), key=lambda w: -w.last_seen_at)
        ordered = [w for w in ordered if tenant is None or w.tenant == tenant]
        return ordered[offset : offset + limit], len(ordered)

    async def count_seen_since(self, since: float, tenant: str | None = None) -> int:
        return sum(
            1
            for w in self.workers.values()
            if w.last_seen_at >= since and tenant in (None, w.tenant)
        )


@dataclass
class MemoryStore:
    leasing: MemoryLeasing

    async def get_many(self, ids: Sequence[uuid.UUID]) -> list[Task]:
        return [self.leasing.tasks[i] for i in ids if i in self.leasing.tasks]


def drain(session: Session) -> list[Push]:
    """Every message waiting in a session's outbox."""
    out = []
    while not session.outbox.empty():
        item = session.outbox.get_nowait()
        assert item is not None
        out.append(item)
    return out


@dataclass
class FixedClock:
    at: float = 1000.0

    def now(self) -> float:
        return self.at
