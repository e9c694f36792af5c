"""PostgreSQL schema, as SQLAlchemy Core tables. Alembic migrations in
migrations/versions/ create exactly this; a test compares the two.

tenants: who owns what; every other table names a row's tenant (`default`
for rows from before tenants).
tasks: one row per task, the source of truth. queues: durable queue settings.
schedules: recurring schedules.
api_keys: API keys, with a digest of each secret (never the secret).
audit_events: the audit log. tenant_limits, dispatch_rates: quotas and rate
limits (the buckets themselves live in Redis, see dtq/app/limits.py).
- payload/result: encoded protobuf (`google.protobuf.Struct` / `Value`), opaque
  to the database so the hot path never re-parses user data.
- lease_token: the fencing token of the current lease; every write by a worker
  is a compare-and-set on (id, state, lease_token).
- request_hash: digest of the submission, to tell an idempotent retry from a
  different request reusing its idempotency key.
- attempt_log: a JSON array, one object per attempt that failed, expired or
  was handed back ({attempt, worker_id, started_at, ended_at, error_type,
  error_message, error_traceback, error_permanent}), appended by the UPDATE
  that records it; NULL until the first. Read only by a single task's full read.
- trace_context: the submitter's trace propagation fields (W3C `traceparent`,
  `tracestate`), NULL when the submission was not traced.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from dtq.domain.auth import Role
from dtq.domain.model import TaskState

metadata = MetaData()

_states = ", ".join(f"'{s.value}'" for s in TaskState)
_roles = ", ".join(f"'{r.value}'" for r in Role)


def _tenant() -> Column[str]:
    return Column("tenant", Text, nullable=False, server_default=text("'default'"))


tenants = Table(
    "tenants",
    metadata,
    Column("name", Text, primary_key=True),
    Column("weight", Integer, nullable=False, server_default=text("1")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("queue", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_retries", Integer, nullable=False),
    Column("timeout_ms", Integer, nullable=False),
    Column("lease_ms", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("result", LargeBinary),
    Column("error_message", Text),
    Column("error_type", Text),
    Column("error_traceback", Text),
    Column("error_permanent", SmallInteger),
    Column("worker_id", Text),
    Column("lease_token", Text),
    Column("idempotency_key", Text),
    Column("request_hash", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("scheduled_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("trace_context", JSONB(none_as_null=True)),
    Column("unique_digest", LargeBinary),
    Column("fairness_key", Text, nullable=False, server_default=text("''")),
    _tenant(),
    # Flows (pg_flows.py): the task this one waits for, its group, and for a
    # group's callback the group; the parent's result (or the group's
    # outcomes) written at release.
    Column("parent_id", UUID(as_uuid=True)),
    Column("group_id", UUID(as_uuid=True)),
    Column("callback_of", UUID(as_uuid=True)),
    Column("parent_result", LargeBinary),
    # The first task of its tree (a chain's first step, a child's top-level
    # ancestor); NULL for a task that is its own root.
    Column("root_id", UUID(as_uuid=True)),
    # The attempts that ended without a result, oldest first (dtq/domain/attempts.py).
    Column("attempt_log", JSONB(none_as_null=True)),
    CheckConstraint(f"state IN ({_states})", name="tasks_state_check"),
    CheckConstraint("priority BETWEEN 1 AND 3", name="tasks_priority_check"),
    # Idempotency keys are unique per queue of a tenant.
    Index(
        "tasks_idempotency_idx",
        "tenant",
        "queue",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    # unique_for: the latest task of a tenant's queue with a digest.
    Index(
        "tasks_unique_idx",
        "tenant",
        "queue",
        "unique_digest",
        "created_at",
        postgresql_where=text("unique_digest IS NOT NULL"),
    ),
    # The scheduler's "what is due next".
    Index(
        "tasks_due_idx",
        "scheduled_at",
        postgresql_where=text("state IN ('scheduled', 'failed')"),
    ),
    # Flows: a parent's children and chain steps, a tree, and a group's tasks.
    Index("tasks_parent_idx", "parent_id", "id", postgresql_where=text("parent_id IS NOT NULL")),
    Index("tasks_root_idx", "root_id", "id", postgresql_where=text("root_id IS NOT NULL")),
    Index("tasks_group_idx", "group_id", "id", postgresql_where=text("group_id IS NOT NULL")),
    # Listing by state (dead letters, running tasks for the reconciler), newest first.
    Index("tasks_state_idx", "state", "id"),
    # Listing by queue or by type, newest first.
    Index("tasks_queue_idx", "queue", "id"),
    Index("tasks_type_idx", "type", "id"),
    # Counting waiting tasks and dead letters by queue (queue stats, quotas) with an
    # index-only scan; one queue's dead letters in id order.
    Index(
        "tasks_counts_idx",
        "state",
        "queue",
        "tenant",
        "id",
        postgresql_where=text("state IN ('pending', 'scheduled', 'failed', 'dead_lettered')"),
    ),
    # The reconciler's scan of open tasks in id order.
    Index("tasks_open_idx", "id", postgresql_where=text("state IN ('pending', 'running')")),
    # Retention: finished tasks by age.
    Index(
        "tasks_finished_idx",
        "finished_at",
        postgresql_where=text("state IN ('completed', 'cancelled')"),
    ),
)

# Durable per-queue settings; Redis holds a copy the lease script reads.
queues = Table(
    "queues",
    metadata,
    Column("tenant", Text, primary_key=True, server_default=text("'default'")),
    Column("name", Text, primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# API keys: what each may do; only a SHA-256 digest of the secret is stored.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("queues", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("tenant", Text, nullable=False, server_default=text("'default'")),
    Column("digest", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    CheckConstraint(f"role IN ({_roles})", name="api_keys_role_check"),
)

# The audit log: calls that changed state on someone else's behalf. Not
# touched by task retention.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", JSONB, nullable=False),
    _tenant(),
    Index("audit_events_at", "at"),
    Index("audit_events_tenant", "tenant", "id"),
    Index("audit_events_actor", "actor", "id"),
)

# Per tenant quotas; NULL: no limit. A tenant without a row has no limits.
tenant_limits = Table(
    "tenant_limits",
    metadata,
    Column("tenant", Text, primary_key=True),
    Column("submit_rate", Float(precision=53)),  # tasks per second
    Column("submit_burst", Integer),
    Column("max_queued", BigInteger),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("max_running", Integer),  # in each of the tenant's queues (0015)
    Column("key_max_running", Integer),  # per fairness key in a queue
    Column("key_weights", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    CheckConstraint("submit_rate > 0", name="tenant_limits_rate_check"),
    CheckConstraint("submit_burst >= 1", name="tenant_limits_burst_check"),
    CheckConstraint("max_queued >= 0", name="tenant_limits_queued_check"),
    CheckConstraint("max_running >= 1", name="tenant_limits_running_check"),
    CheckConstraint("key_max_running >= 1", name="tenant_limits_key_running_check"),
)

# Per (queue, task type) dispatch rates: leases granted per second, across
# every server and worker.
dispatch_rates = Table(
    "dispatch_rates",
    metadata,
    Column("queue", Text, primary_key=True),
    Column("task_type", Text, primary_key=True),
    Column("rate", Float(precision=53), nullable=False),
    Column("burst", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("rate > 0", name="dispatch_rates_rate_check"),
    CheckConstraint("burst >= 1", name="dispatch_rates_burst_check"),
)

# Groups of tasks with a callback (pg_flows.py): how many of the group's tasks
# are not terminal yet, decremented in the transaction of each one's end; the
# callback is released in the one that makes it 0.
task_groups = Table(
    "task_groups",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("remaining", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("callback_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    _tenant(),
    CheckConstraint("remaining >= 0", name="task_groups_remaining_check"),
    Index("task_groups_callback_idx", "callback_id"),  # retention takes a group with it
)

# Recurring schedules (dtq/domain/schedule.py): a cron expression in a time zone
# or an interval (milliseconds), the task each fire submits, the policies, and
# where the schedule is: the next fire time (NULL while paused) and its last run.
# The queue manager locks due rows with FOR UPDATE SKIP LOCKED.
schedules = Table(
    "schedules",
    metadata,
    Column("name", Text, primary_key=True),
    Column("cron", Text, nullable=False, server_default=text("''")),
    Column("time_zone", Text, nullable=False, server_default=text("'UTC'")),
    Column("interval_ms", BigInteger, nullable=False, server_default=text("0")),
    Column("task_type", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("queue", Text, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("max_retries", Integer),
    Column("timeout_ms", Integer),
    Column("overlap", Text, nullable=False),
    Column("catch_up", Text, nullable=False),
    Column("catch_up_limit", Integer, nullable=False),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("origin", Text, nullable=False),
    Column("next_fire_at", DateTime(timezone=True)),
    Column("last_fire_at", DateTime(timezone=True)),
    Column("last_task_id", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "overlap IN ('allow', 'skip', 'cancel_previous')", name="schedules_overlap_check"
    ),
    CheckConstraint("catch_up IN ('skip', 'one', 'all')", name="schedules_catch_up_check"),
    CheckConstraint("origin IN ('api', 'code')", name="schedules_origin_check"),
    # The manager's "which schedule fires next".
    Index("schedules_due_idx", "next_fire_at", postgresql_where=text("NOT paused")),
)
