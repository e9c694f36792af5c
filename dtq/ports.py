"""What the use cases need from the outside world, as Protocols.

`TaskStore` is PostgreSQL, the source of truth. `DispatchQueue` is Redis: the
ready index, the leases, and the notifications that push work to streams. Redis
can be rebuilt from PostgreSQL at any time; no task lives only there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from dtq.domain.audit import AuditEvent
from dtq.domain.auth import ApiKey, Principal
from dtq.domain.model import (
    LeaseRef,
    NewTask,
    Priority,
    QueueStats,
    Submitted,
    Task,
    TaskError,
    TaskFilter,
    TaskState,
    WorkerInfo,
)


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class Ready:
    """A task to index as ready to run."""

    id: uuid.UUID
    queue: str
    type: str
    priority: Priority

    @classmethod
    def of(cls, task: Task | NewTask) -> Ready:
        return cls(task.id, task.queue, task.type, task.priority)


@dataclass(frozen=True, slots=True)
class Grant:
    """A lease the dispatcher took from Redis, to record in PostgreSQL."""

    task_id: uuid.UUID
    token: str
    worker_id: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a finished, failed or expired attempt leaves its task."""

    state: TaskState
    scheduled_at: float | None = None


# Decides the next state of a running task from the task and the error.
Decide = Callable[[Task, TaskError], Resolution]


class TaskStore(Protocol):
    """Durable task state (PostgreSQL). Every write is a compare-and-set."""

    async def insert(self, tasks: Sequence[NewTask], now: float) -> list[Submitted]:
        """Store tasks, deduplicating by (queue, idempotency_key). Raises
        ALREADY_EXISTS when a key was used with a different request."""
        ...

    async def get(self, task_id: uuid.UUID, with_payload: bool = True) -> Task | None: ...

    async def get_many(self, ids: Sequence[uuid.UUID]) -> list[Task]:
        """The tasks that exist among `ids`, without payloads."""
        ...

    async def list_tasks(
        self, filters: TaskFilter, before: uuid.UUID | None, limit: int, with_payload: bool
    ) -> list[Task]: ...

    async def lease(self, grants: Sequence[Grant], now: float) -> list[Task]:
        """PENDING -> RUNNING for each grant; returns the tasks that moved."""
        ...

    async def complete(
        self, items: Sequence[tuple[LeaseRef, bytes | None]], now: float
    ) -> list[Task | None]:
        """RUNNING -> COMPLETED where the token matches; None where it did not."""
        ...

    async def fail(
        self, items: Sequence[tuple[LeaseRef, TaskError]], decide: Decide, now: float
    ) -> list[Task | None]:
        """RUNNING -> decide(task, error) where the token matches."""
        ...

    async def cancel(self, task_id: uuid.UUID, now: float) -> tuple[Task, TaskState, str | None]:
        """-> CANCELLED; returns the task, the state it left and the lease
        token it held (a running task)."""
        ...

    async def retry(self, task_id: uuid.UUID, now: float) -> Task:
        """FAILED or DEAD_LETTERED -> PENDING. A dead-lettered task gets a fresh
        budget of retries."""
        ...

    async def requeue_dead(
        self,
        queue: str,
        task_type: str | None,
        limit: int,
        now: float,
        after: uuid.UUID | None = None,
    ) -> list[Task]:
        """Up to `limit` DEAD_LETTERED tasks of `queue` (ids after `after`) ->
        PENDING, oldest first, each with a fresh budget of retries as `retry`
        gives; returns them in id order."""
        ...

    async def count_dead(self, queue: str, task_type: str | None) -> int:
        """DEAD_LETTERED tasks of `queue` (of `task_type`)."""
        ...

    async def purge_dead(self, queue: str, task_type: str | None) -> int:
        """Delete the DEAD_LETTERED tasks of `queue` (of `task_type`), in small
        transactions; returns how many."""
        ...

    async def purge_finished(self, before: float, limit: int) -> int:
        """Delete at most `limit` COMPLETED and CANCELLED tasks that finished
        before `before` (Unix s), in one transaction; returns how many. Dead
        letters are never deleted here."""
        ...

    async def promote_due(self, now: float, limit: int) -> list[Task]:
        """SCHEDULED/FAILED whose time came -> PENDING."""
        ...

    async def next_due(self) -> float | None:
        """Earliest scheduled time of a SCHEDULED or FAILED task."""
        ...

    async def expire(
        self, refs: Sequence[LeaseRef], decide: Decide, now: float
    ) -> tuple[list[Task], list[Task]]:
        """Expired leases: (tasks moved by decide, tasks found PENDING that
        were never marked running and need re-indexing)."""
        ...

    async def release(self, refs: Sequence[LeaseRef], now: float) -> list[Task]:
        """Leases a worker gave back unfinished: RUNNING -> PENDING where the
        token matches, the attempt uncounted (attempts - 1), the worker id kept.
        Returns the tasks that moved."""
        ...

    async def scan_open(self, after: uuid.UUID | None, limit: int) -> list[Task]:
        """PENDING and RUNNING tasks in id order after `after` (reconciliation)."""
        ...

    async def state_counts(self, queue: str | None) -> dict[tuple[str, TaskState], int]:
        """Counts of SCHEDULED, FAILED, DEAD_LETTERED tasks by queue."""
        ...

    async def ping(self) -> None: ...


class DispatchQueue(Protocol):
    """Ready index, leases and the notifications that push work (Redis).
    Lease deadlines use Redis's clock."""

    async def enqueue(self, tasks: Sequence[Ready]) -> None:
        """Index tasks as ready and wake the streams that take them."""
        ...

    async def lease(
        self, queue: str, task_types: Sequence[str], tokens: Sequence[str], lease_seconds: float
    ) -> tuple[list[Ready], float]:
        """Pop up to len(tokens) ready tasks, highest effective priority first,
        recording a provisional lease for each (the i-th popped task gets the
        i-th token); returns them and Redis's clock (Unix s)."""
        ...

    async def set_deadlines(self, queue: str, refs: Sequence[tuple[LeaseRef, float]]) -> None:
        """Set the deadline (Unix s) of held leases."""
        ...

    async def extend(
        self, queue: str, refs: Sequence[tuple[LeaseRef, float]]
    ) -> list[float | None]:
        """Extend each lease by its duration (s); None where it is not held."""
        ...

    async def drop_leases(self, queue: str, refs: Sequence[LeaseRef]) -> None: ...

    async def claim_expired(self, queue: str, limit: int) -> list[LeaseRef]:
        """Remove and return leases whose deadline passed."""
        ...

    async def remove_ready(self, task: Task) -> None: ...

    async def publish_changes(self, tasks: Sequence[Task]) -> None:
        """Tell watchers that these tasks changed."""
        ...

    async def settle(
        self, finished: Mapping[str, tuple[Sequence[LeaseRef], int, int]], changed: Sequence[Task]
    ) -> None:
        """Outcomes recorded: per queue, drop their leases and count them
        (completed, failed); tell watchers of `changed`. One round trip."""
        ...

    async def publish_cancel(self, task: Task) -> None:
        """Tell the server holding the worker's stream to revoke the lease."""
        ...

    async def wake_scheduler(self, due: float) -> None: ...

    async def ping(self) -> None: ...

    async def restore_leases(self, items: Sequence[tuple[str, LeaseRef, float]]) -> int:
        """Re-create leases (queue, lease, deadline) missing from Redis."""
        ...

    async def now(self) -> float:
        """Redis's clock (Unix s), the clock of lease deadlines."""
        ...


class QueueIndex(Protocol):
    """Which queues exist and their live figures and pause flags (Redis), and
    the repair of the ready index from PostgreSQL."""

    async def queues(self) -> set[str]: ...

    async def stats(self, queue: str) -> QueueStats: ...

    async def set_paused(self, queue: str, paused: bool) -> None: ...

    async def add(self, queues: Sequence[str]) -> None:
        """Make these queues known (they count against the queue cap)."""
        ...

    async def remove(self, queue: str) -> None:
        """Forget a queue: its name and pause flag."""
        ...

    async def restore_ready(self, tasks: Sequence[Task]) -> int:
        """Index PENDING tasks missing from Redis; returns how many were missing."""
        ...

    async def epoch(self) -> str | None: ...

    async def set_epoch(self, value: str) -> None: ...


class QueueSettings(Protocol):
    """Durable queue settings (PostgreSQL)."""

    async def set_paused(self, queue: str, paused: bool) -> None: ...

    async def paused(self) -> dict[str, bool]: ...

    async def delete(self, queue: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Liveness:
    """The live part of a worker's registration."""

    worker_id: str
    active_tasks: int
    draining: bool
    last_seen_at: float


class WorkerRegistry(Protocol):
    """Known workers and their liveness (Redis)."""

    async def upsert(self, worker: WorkerInfo) -> None: ...

    async def touch(
        self, worker_id: str, active_tasks: int, draining: bool, now: float
    ) -> None: ...

    async def touch_many(self, rows: Sequence[Liveness]) -> None:
        """`touch` for many workers at once (one round trip)."""
        ...

    async def get(self, worker_id: str) -> WorkerInfo | None: ...

    async def page(self, offset: int, limit: int) -> tuple[list[WorkerInfo], int]:
        """Workers most recently seen first, `offset` on, at most `limit`;
        and how many are known."""
        ...

    async def count_seen_since(self, since: float) -> int:
        """Workers seen at or after `since` (Unix s)."""
        ...


class TaskWatches(Protocol):
    """Changes of single tasks, as they happen (Redis pub/sub)."""

    def watch(self, task_id: uuid.UUID) -> AbstractAsyncContextManager[asyncio.Queue[str]]:
        """A queue that receives the task's new state after each change, while open.

        Best effort: a change made while the subscription was down is not
        delivered, so a watcher re-reads the task now and then."""
        ...


class ApiKeys(Protocol):
    """Stored API keys (PostgreSQL): metadata and a digest of each secret."""

    async def add(self, key: ApiKey, digest: str) -> None: ...

    async def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its secret's digest, revoked and expired ones included."""
        ...

    async def list_keys(self) -> list[ApiKey]: ...

    async def revoke(self, key_id: str, now: float) -> bool:
        """False when there is no such key (revoking twice is fine)."""
        ...

    async def used(self, key_ids: Sequence[str], now: float) -> None:
        """Record that these keys were used (last_used_at)."""
        ...


class AuditLog(Protocol):
    """Recorded calls (PostgreSQL), newest first."""

    async def add(self, event: AuditEvent) -> None: ...

    async def page(
        self, since: float | None, actor: str | None, before_id: int | None, limit: int
    ) -> list[AuditEvent]:
        """Events with id < `before_id` (None: from the newest), newest first."""
        ...


class TokenVerifier(Protocol):
    """Checks bearer tokens issued by someone else (JWT)."""

    def verify(self, token: str) -> tuple[Principal, float]:
        """The token's caller and its expiry (Unix s); raises DtqError
        UNAUTHENTICATED when it is not valid."""
        ...
