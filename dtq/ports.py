"""What the use cases need from the outside world, as Protocols.

Below the API a queue is a tenant's queue: Redis-side methods take its
`tenant_queue` name (`dtq.domain.tenants`), PostgreSQL-side ones the tenant
and the queue apart.

`TaskStore` is PostgreSQL, the source of truth. `DispatchQueue` is Redis: the
ready index, the leases, and the notifications that push work to streams. Redis
can be rebuilt from PostgreSQL at any time; no task lives only there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from dtq.domain.audit import AuditEvent
from dtq.domain.auth import ApiKey, Principal
from dtq.domain.limits import DispatchRate, Share, TenantLimits
from dtq.domain.model import (
    Cancelled,
    Family,
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
from dtq.domain.schedule import Schedule
from dtq.domain.tenants import DEFAULT, Tenant


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
    queue: str  # a tenant's queue (`dtq.domain.tenants.tenant_queue`)
    type: str
    priority: Priority
    fairness_key: str = ""

    @classmethod
    def of(cls, task: Task | NewTask) -> Ready:
        return cls(task.id, task.tenant_queue, task.type, task.priority, task.fairness_key)


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
        """Store tasks, deduplicating by (tenant, queue, idempotency_key). Raises
        ALREADY_EXISTS when a key was used with a different request."""
        ...

    async def insert_group(
        self, members: Sequence[NewTask], callback: NewTask, now: float
    ) -> tuple[list[Task], Task]:
        """Store a group (`callback.callback_of` its id) and its WAITING callback."""
        ...

    async def insert_children(
        self, parent: LeaseRef, tenant: str, new: Sequence[NewTask], now: float
    ) -> list[Submitted]:
        """Store children of a task RUNNING under `parent` (its lease), with
        their parent and root set; NOT_FOUND outside `tenant`, STALE_LEASE
        for a lease that is not current. Idempotency keys are honoured."""
        ...

    async def family(self, task: Task, queues: Sequence[str] | None = None) -> Family:
        """The task's children by state and first ids (those in `queues`; None:
        any), and its group's progress."""
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

    async def cancel(self, task_id: uuid.UUID, now: float) -> Cancelled:
        """-> CANCELLED, with its unfinished descendants, in one transaction;
        returns the task, the state it left and the lease token it held (a
        running task), and the same of each descendant cancelled."""
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
        tenant: str = DEFAULT,
    ) -> list[Task]:
        """Up to `limit` DEAD_LETTERED tasks of the tenant's `queue` (ids after `after`) ->
        PENDING, oldest first, each with a fresh budget of retries as `retry`
        gives; returns them in id order."""
        ...

    async def count_dead(self, queue: str, task_type: str | None, tenant: str = DEFAULT) -> int:
        """DEAD_LETTERED tasks of the tenant's `queue` (of `task_type`)."""
        ...

    async def purge_dead(self, queue: str, task_type: str | None, tenant: str = DEFAULT) -> int:
        """Delete the DEAD_LETTERED tasks of the tenant's `queue` (of `task_type`), in small
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

    async def release(
        self, refs: Sequence[LeaseRef], now: float, revoked: bool = False
    ) -> list[Task]:
        """Leases given back unfinished: RUNNING -> PENDING where the token
        matches, the attempt uncounted, the worker id kept. `revoked`: the
        server took them back (the worker never named them); the task's last
        error says so, since the worker may still run that attempt.
        Returns the tasks that moved."""
        ...

    async def scan_open(self, after: uuid.UUID | None, limit: int) -> list[Task]:
        """PENDING and RUNNING tasks in id order after `after` (reconciliation)."""
        ...

    async def state_counts(
        self, queue: str | None, tenant: str | None = None
    ) -> dict[tuple[str, TaskState], int]:
        """Counts of SCHEDULED, FAILED, DEAD_LETTERED tasks by (tenant_queue
        name, state), of one tenant (None: all)."""
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

    async def lease_rated(
        self,
        queue: str,
        task_types: Sequence[str],
        tokens: Sequence[str],
        lease_seconds: float,
        rates: Mapping[str, tuple[float, int]],
        share: Share = ...,
    ) -> tuple[list[Ready], float, float]:
        """`lease`, taking no more tasks of a type in `rates` (type -> (leases
        per second, burst)) than its token bucket holds, and skipping it when
        empty; also returns the seconds until a skipped type with ready tasks
        gets its next token (0: none is waiting). `share`: the running caps and
        fairness key weights of the queue's tenant."""
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

    async def restore_leases(self, items: Sequence[tuple[str, LeaseRef, float, str]]) -> int:
        """Re-create leases (queue, lease, deadline, fairness key) missing from
        Redis, and count them as running."""
        ...

    async def now(self) -> float:
        """Redis's clock (Unix s), the clock of lease deadlines."""
        ...


class RateBuckets(Protocol):
    """Token buckets shared by every server (Redis)."""

    async def take(self, tenant: str, n: int, rate: float, burst: int) -> float:
        """Take n tokens from the tenant's submit bucket, all or nothing:
        0 when taken, else the seconds until they are there."""
        ...


class LimitStore(Protocol):
    """Configured quotas and rates (PostgreSQL), and the queued count."""

    async def tenant_limits(self) -> list[TenantLimits]:
        """Every tenant with limits."""
        ...

    async def set_tenant_limits(self, limits: TenantLimits) -> TenantLimits: ...

    async def dispatch_rates(self) -> list[DispatchRate]: ...

    async def set_dispatch_rate(self, rate: DispatchRate) -> DispatchRate: ...

    async def delete_dispatch_rate(self, queue: str, task_type: str) -> bool:
        """False when there was no such rate."""
        ...

    async def count_queued(self, tenant: str) -> int:
        """The tenant's PENDING, SCHEDULED and FAILED (awaiting a retry) tasks."""
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

    async def set_paused(self, queue: str, paused: bool, tenant: str = DEFAULT) -> None: ...

    async def paused(self) -> dict[str, bool]:
        """By `tenant_queue` name."""
        ...

    async def delete(self, queue: str, tenant: str = DEFAULT) -> None: ...


@dataclass(frozen=True, slots=True)
class Liveness:
    """The live part of a worker's registration."""

    worker_id: str
    active_tasks: int
    draining: bool
    last_seen_at: float
    tenant: str = "default"


class WorkerRegistry(Protocol):
    """Known workers and their liveness (Redis)."""

    async def upsert(self, worker: WorkerInfo) -> None: ...

    async def touch(
        self, worker_id: str, active_tasks: int, draining: bool, now: float, tenant: str = DEFAULT
    ) -> None: ...

    async def touch_many(self, rows: Sequence[Liveness]) -> None:
        """`touch` for many workers at once (one round trip)."""
        ...

    async def get(self, worker_id: str, tenant: str = DEFAULT) -> WorkerInfo | None: ...

    async def page(
        self, offset: int, limit: int, tenant: str | None = None
    ) -> tuple[list[WorkerInfo], int]:
        """Workers of `tenant` (None: every tenant) most recently seen first,
        `offset` on, at most `limit`; and how many are known."""
        ...

    async def count_seen_since(self, since: float, tenant: str | None = None) -> int:
        """Workers (of `tenant`; None: every tenant) seen at or after `since` (Unix s)."""
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
        self,
        since: float | None,
        actor: str | None,
        before_id: int | None,
        limit: int,
        tenant: str | None = None,
    ) -> list[AuditEvent]:
        """Events of `tenant` (None: all) with id < `before_id` (None: from
        the newest), newest first."""
        ...


class Tenants(Protocol):
    """Stored tenants (PostgreSQL)."""

    async def add(self, tenant: Tenant) -> bool:
        """False when one of that name exists (it is left as it is)."""
        ...

    async def get(self, name: str) -> Tenant | None: ...

    async def list_all(self) -> list[Tenant]:
        """By name."""
        ...


class TokenVerifier(Protocol):
    """Checks bearer tokens issued by someone else (JWT)."""

    def verify(self, token: str) -> tuple[Principal, float]:
        """The token's caller and its expiry (Unix s); raises DtqError
        UNAUTHENTICATED when it is not valid."""
        ...


@dataclass(frozen=True, slots=True)
class Fired:
    """What firing a due schedule left: its next fire time and its latest run."""

    next_fire_at: float
    last_fire_at: float | None
    last_task_id: uuid.UUID | None


class ScheduleStore(Protocol):
    """Recurring schedules (PostgreSQL), by name."""

    async def create(self, schedule: Schedule) -> Schedule:
        """ALREADY_EXISTS (reason SCHEDULE_EXISTS) when the name is taken."""
        ...

    async def get(self, name: str) -> Schedule | None: ...

    async def list_schedules(self, after: str | None, limit: int) -> list[Schedule]:
        """Schedules by name, those after `after`, at most `limit`."""
        ...

    async def update(self, schedule: Schedule, retime: bool) -> Schedule | None:
        """Replace the definition and pause flag, and with `retime` the next
        fire time (else the stored one stays); None when gone."""
        ...

    async def delete(self, name: str) -> bool: ...

    async def record_run(self, name: str, at: float, task_id: uuid.UUID) -> None:
        """A run submitted by hand (TriggerSchedule) becomes the last run."""
        ...

    async def fire_due(
        self, now: float, limit: int, fire: Callable[[Schedule], Awaitable[Fired]]
    ) -> int:
        """Call `fire` for each schedule due at `now`, held by this caller alone
        meanwhile, and store what it returns; how many there were."""
        ...

    async def next_due(self) -> float | None:
        """The earliest next fire time of a schedule not paused."""
        ...
