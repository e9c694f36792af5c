"""Plain data of the domain: tasks, leases, outcomes, workers, queue stats.

Nothing here knows gRPC, Redis or SQL. Payloads and results are opaque bytes
(the API layer stores the encoded `google.protobuf.Struct`/`Value`), so the hot
path never re-parses user data.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from dtq.domain.tenants import DEFAULT, tenant_queue


class Priority(enum.IntEnum):
    """Priority within a queue. Numbers match the protobuf enum."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def letter(self) -> str:
        """One-letter name used in Redis keys."""
        return self.name[0].lower()


class TaskState(enum.StrEnum):
    """Where a task is in its life. Values are what PostgreSQL stores."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead_lettered"
    WAITING = "waiting"  # a flow's step, waiting for its parent or its group


@dataclass(frozen=True, slots=True)
class TaskError:
    """Why an attempt failed."""

    message: str
    type: str = ""
    traceback: str = ""
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task: which worker, when, and why it ended without a result
    (`error`; None for an attempt that is running, completed or was cancelled)."""

    attempt: int
    worker_id: str
    started_at: float | None
    ended_at: float | None
    error: TaskError | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated submission, ready to store."""

    id: uuid.UUID
    type: str
    queue: str
    payload: bytes
    priority: Priority
    max_retries: int
    timeout: float
    lease_duration: float
    scheduled_at: float | None
    idempotency_key: str | None
    # Digest of everything that defines the request, to tell a true retry of a
    # submission from a different request reusing its idempotency key.
    request_hash: bytes
    # Trace propagation fields of the submission (W3C traceparent/tracestate).
    trace_context: dict[str, str] | None = None
    unique: Unique | None = None
    tenant: str = DEFAULT
    fairness_key: str = ""  # fair dispatch key ("" = the queue's shared key)
    # Flows (dtq/adapters/pg_flows.py): the task this one waits for, the group
    # it belongs to, the group it is the callback of.
    after: uuid.UUID | None = None
    group_id: uuid.UUID | None = None
    callback_of: uuid.UUID | None = None
    # A child task: the running task that submitted it, and its tree's root.
    child_of: uuid.UUID | None = None
    root_id: uuid.UUID | None = None

    @property
    def tenant_queue(self) -> str:
        """Its queue's name below the API (`dtq.domain.tenants`)."""
        return tenant_queue(self.tenant, self.queue)


@dataclass(frozen=True, slots=True)
class Unique:
    """Unique for a window: an earlier task of the queue with the same digest,
    created within `seconds` and in one of `states` (empty: any), is returned
    instead of a new one."""

    digest: bytes  # of the type and the payload or the caller's unique key
    seconds: float
    states: tuple[TaskState, ...] = ()


@dataclass(frozen=True, slots=True)
class Task:
    """A task as stored. Times are Unix seconds (server clock)."""

    id: uuid.UUID
    type: str
    queue: str
    priority: Priority
    state: TaskState
    attempts: int
    max_retries: int
    timeout: float
    lease_duration: float
    created_at: float
    updated_at: float
    payload: bytes | None = None
    scheduled_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: bytes | None = None
    error: TaskError | None = None
    worker_id: str | None = None
    idempotency_key: str | None = None
    lease_token: str | None = field(default=None, repr=False)
    # Trace propagation fields of the submission; None when it was not traced.
    trace_context: dict[str, str] | None = field(default=None, repr=False)
    tenant: str = DEFAULT
    fairness_key: str = ""  # fair dispatch key ("" = the queue's shared key)
    parent_id: uuid.UUID | None = None
    group_id: uuid.UUID | None = None
    callback_of: uuid.UUID | None = None
    # The parent's result (a chain step), or the group's outcomes (a callback).
    parent_result: bytes | None = field(default=None, repr=False)
    root_id: uuid.UUID | None = None  # the first task of its tree; None: its own root
    # Attempts that ended without a result (failed, expired, handed back), oldest
    # first, at most the last ATTEMPT_LOG_SIZE; None when not read (only a
    # single task's full read reads it, see `attempts.history`; not compared).
    attempt_log: tuple[Attempt, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def tenant_queue(self) -> str:
        """Its queue's name below the API (`dtq.domain.tenants`)."""
        return tenant_queue(self.tenant, self.queue)


@dataclass(frozen=True, slots=True)
class Submitted:
    """Outcome of one submission: the stored task, or the earlier one."""

    task: Task
    deduplicated: bool


class Cancelled(NamedTuple):
    """A task a cancel made CANCELLED: the state it left, the lease token it
    held (a running task's), and the descendants cancelled with it."""

    task: Task
    was: TaskState
    token: str | None
    descendants: tuple[Cancelled, ...] = ()


@dataclass(frozen=True, slots=True)
class Lease:
    """A task granted to one worker until `expire_at`."""

    task: Task
    token: str
    expire_at: float


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """A held lease, named by task id and token."""

    task_id: uuid.UUID
    token: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended: `result` on success, else `error`."""

    task_id: uuid.UUID
    token: str
    result: bytes | None = None
    error: TaskError | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a worker stream takes: task types from queues."""

    queues: tuple[str, ...]
    task_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A registered worker, as the registry keeps it."""

    id: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    task_types: tuple[str, ...]
    concurrency: int
    version: str
    labels: dict[str, str]
    registered_at: float
    last_seen_at: float
    active_tasks: int = 0
    draining: bool = False
    metrics_address: str = ""  # host:port of its /metrics, "" when none
    tenant: str = DEFAULT


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of one queue."""

    queue: str
    pending_by_priority: dict[Priority, int]
    running: int = 0
    scheduled: int = 0
    retrying: int = 0
    dead_lettered: int = 0
    completed_last_minute: int = 0
    failed_last_minute: int = 0
    oldest_pending_age: float = 0.0
    oldest_age_by_priority: dict[Priority, float] = field(default_factory=dict)
    paused: bool = False
    tenant: str = DEFAULT

    @property
    def pending(self) -> int:
        return sum(self.pending_by_priority.values())


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Filters of ListTasks."""

    state: TaskState | None = None
    type: str | None = None
    queue: str | None = None
    tenant: str | None = None  # None: every tenant
    parent_id: uuid.UUID | None = None
    root_id: uuid.UUID | None = None
    created_after: float | None = None  # created at or after (Unix seconds)
    created_before: float | None = None  # created before
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Family:
    """A task's children (tasks whose parent_id names it): counts by state and
    the first ids; and, for a task of a group or its callback, the group's
    progress."""

    children_by_state: dict[TaskState, int] = field(default_factory=dict)
    child_ids: list[uuid.UUID] = field(default_factory=list)
    group_id: uuid.UUID | None = None
    group_total: int = 0
    group_done: int = 0
    group_by_state: dict[TaskState, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing."""

    items: list[Task]
    next_token: str
