"""Every SQL statement dtq runs on PostgreSQL, by name, with how to read its rows.

Parameters are psycopg2's `%(name)s`; a `VALUES %(rows)s` list takes a
`pg_conn.Values`. Optional filters are `(%(x)s IS NULL OR column = %(x)s)`:
psycopg2 sends the values inline, so the planner folds the NULL test away and
each statement plans as if written for the filters given.

Every state change is a compare-and-set: `WHERE state IN (the event's sources)`,
plus `AND lease_token = ...` for a worker's write, so a stale worker or a racing
process can never overwrite a newer state. Bulk writes take their rows from
`UPDATE ... FROM (VALUES ...)`: one statement for many tasks. Batches of deletes
and re-queues pick their rows with `id = ANY(ARRAY(SELECT ... LIMIT n FOR UPDATE
SKIP LOCKED))`, an InitPlan run once (`id IN (SELECT ...)` may become a semi-join
that rescans the locking subquery per row and so ignores the LIMIT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dtq.adapters.pg_rows import (
    Row,
    api_key,
    audit_event,
    dispatch_rate,
    tenant,
    tenant_limits,
    to_schedule,
    to_task,
)
from dtq.adapters.pg_tables import tasks
from dtq.domain import attempts, states
from dtq.domain.model import TaskState
from dtq.domain.states import Event
from dtq.domain.tenants import tenant_queue

T = TypeVar("T")
S = TaskState


@dataclass(frozen=True)
class Sql(Generic[T]):
    """A statement and what one row it returns becomes."""

    text: str
    row: Callable[[Row], T]


def _in(event: Event) -> str:
    """SQL list of the states `event` may start from."""
    return ", ".join(f"'{s.value}'" for s in sorted(states.sources(event)))


def _listed(names: frozenset[TaskState] | list[TaskState]) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(names))


def _task_with(extra: str) -> Callable[[Row], tuple[Any, Any]]:
    return lambda row: (to_task(row), row[extra])


def _one(name: str) -> Callable[[Row], Any]:
    return lambda row: row[name]


_BIG = ("payload", "result", "request_hash", "parent_result", "attempt_log")
BASIC = [c.name for c in tasks.c if c.name not in _BIG]
# Every column a worker or a listing may need; attempt_log only in GET_TASK.
FULL = [c.name for c in tasks.c if c.name not in ("request_hash", "attempt_log")]
_FULL = ", ".join(f"t.{c}" for c in FULL)
_BASIC = ", ".join(f"t.{c}" for c in BASIC)
# The basic columns, but the lease token that matched (v.token) instead of the row's.
_FENCED = ", ".join("v.token AS lease_token" if c == "lease_token" else f"t.{c}" for c in BASIC)

# -- the retry budget ------------------------------------------------------------------
# A task may run max_retries + 1 times (attempts counts the runs). An operator's
# re-queue of a dead letter gives it max_retries + 1 more runs; a lease handed back
# unfinished (a worker shutting down) keeps its attempt number (never reused) but
# does not use up a retry.
REQUEUED_BUDGET = (
    f"CASE WHEN t.state = '{S.DEAD_LETTERED.value}' "
    "THEN t.attempts + t.max_retries ELSE t.max_retries END"
)
RELEASED_BUDGET = "t.max_retries + 1"

# -- submitting ----------------------------------------------------------------------
NEW_COLUMNS = (
    "id", "queue", "type", "priority", "state", "attempts", "max_retries", "timeout_ms",
    "lease_ms", "payload", "idempotency_key", "request_hash", "created_at", "updated_at",
    "scheduled_at", "trace_context", "unique_digest", "tenant", "fairness_key", "parent_id",
    "group_id", "callback_of", "root_id",
)  # fmt: skip
INSERT_ROW = (
    "(%s::uuid, "
    + ", ".join(["%s"] * (len(NEW_COLUMNS) - 9))
    + ", %s::jsonb, %s, %s, %s, %s::uuid, %s::uuid, %s::uuid, %s::uuid)"
)
INSERT_TASKS = Sql(
    f"INSERT INTO tasks ({', '.join(NEW_COLUMNS)}) VALUES %(rows)s"
    " ON CONFLICT DO NOTHING RETURNING id",
    _one("id"),
)
# Fresh keys (the common case: dtq.Client makes one up for every submit): one look,
# then the INSERT without ON CONFLICT, which fails whole on a key taken meanwhile.
ANY_KEY = Sql(
    "SELECT 1 AS one FROM tasks t JOIN (VALUES %(keys)s) AS k(tenant, queue, key)"
    " ON t.tenant = k.tenant AND t.queue = k.queue AND t.idempotency_key = k.key LIMIT 1",
    _one("one"),
)
KEY_ROW = "(%s, %s, %s)"
INSERT_FRESH = Sql(INSERT_TASKS.text.replace(" ON CONFLICT DO NOTHING", ""), _one("id"))
TASKS_BY_KEYS = Sql(
    f"SELECT {_FULL}, t.request_hash FROM tasks t"
    " WHERE t.tenant = %(tenant)s AND t.queue = %(queue)s"
    " AND t.idempotency_key = ANY(%(keys)s)",
    _task_with("request_hash"),
)

# unique_for: one transaction at a time per (queue, digest), then the latest match.
LOCK_UNIQUE = Sql("SELECT pg_advisory_xact_lock(%(key)s)::text AS locked", _one("locked"))
UNIQUE_MATCH = Sql(
    f"SELECT {_FULL} FROM tasks t"
    " WHERE t.tenant = %(tenant)s AND t.queue = %(queue)s AND t.unique_digest = %(digest)s"
    " AND t.created_at > %(since)s"
    " AND (%(states)s::text[] IS NULL OR t.state = ANY(%(states)s::text[]))"
    " ORDER BY t.created_at DESC LIMIT 1",
    to_task,
)

# -- reading -------------------------------------------------------------------------
GET_TASK = Sql(f"SELECT {_FULL}, t.attempt_log FROM tasks t WHERE t.id = %(id)s", to_task)
GET_TASK_BASIC = Sql(f"SELECT {_BASIC} FROM tasks t WHERE t.id = %(id)s", to_task)
GET_TASKS = Sql(f"SELECT {_BASIC} FROM tasks t WHERE t.id = ANY(%(ids)s)", to_task)
GET_TASKS_FULL = Sql(f"SELECT {_FULL} FROM tasks t WHERE t.id = ANY(%(ids)s)", to_task)
_WHERE = """
    WHERE (%(state)s::text IS NULL OR t.state = %(state)s)
      AND (%(type)s::text IS NULL OR t.type = %(type)s)
      AND (%(queue)s::text IS NULL OR t.queue = %(queue)s)
      AND (%(tenant)s::text IS NULL OR t.tenant = %(tenant)s)
      AND (%(parent)s::uuid IS NULL OR t.parent_id = %(parent)s)
      AND (%(root)s::uuid IS NULL OR t.root_id = %(root)s)
      AND (%(key)s::text IS NULL OR t.idempotency_key = %(key)s)
      AND (%(since)s::timestamptz IS NULL OR (t.created_at >= %(since)s AND t.id >= %(since_id)s))
      AND (%(until)s::timestamptz IS NULL OR (t.created_at < %(until)s AND t.id < %(until_id)s))
      AND (%(before)s::uuid IS NULL OR t.id < %(before)s)
    ORDER BY t.id DESC LIMIT %(limit)s"""
_LISTED = f" FROM tasks t{_WHERE}"
LIST_TASKS = Sql(f"SELECT {_FULL}{_LISTED}", to_task)
LIST_TASKS_BASIC = Sql(f"SELECT {_BASIC}{_LISTED}", to_task)
# By idempotency key: tasks_idempotency_idx leads with (tenant, queue), which a
# key search may not name. PostgreSQL 15 has no skip scan, so walk the index's
# distinct (tenant, queue) pairs (one probe each, a loose index scan), then look
# the key up under each (LIMIT 1: a key is unique there, and it keeps the planner
# from a join that scans every task): two probes per queue.
_PAIR_OF = """SELECT tenant, queue FROM tasks WHERE idempotency_key IS NOT NULL
      AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s)"""
_BY_KEY = f"""WITH RECURSIVE pairs(tenant, queue) AS (
    ({_PAIR_OF} ORDER BY tenant, queue LIMIT 1)
    UNION ALL
    SELECT n.tenant, n.queue FROM pairs p, LATERAL ({_PAIR_OF}
      AND (tenant, queue) > (p.tenant, p.queue) ORDER BY tenant, queue LIMIT 1) n),
    keyed AS (SELECT k.* FROM pairs p, LATERAL (SELECT * FROM tasks
      WHERE tenant = p.tenant AND queue = p.queue AND idempotency_key = %(key)s LIMIT 1) k)
    SELECT {{}} FROM keyed t{_WHERE}"""
LIST_BY_KEY = Sql(_BY_KEY.format(_FULL), to_task)
LIST_BY_KEY_BASIC = Sql(_BY_KEY.format(_BASIC), to_task)
STATE_COUNTS = Sql(
    f"""SELECT tenant, queue, state, count(*) AS n FROM tasks
    WHERE state IN ({_listed([S.SCHEDULED, S.FAILED, S.DEAD_LETTERED])})
      AND (%(queue)s::text IS NULL OR queue = %(queue)s)
      AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
    GROUP BY tenant, queue, state""",
    lambda row: ((tenant_queue(row["tenant"], row["queue"]), TaskState(row["state"])), row["n"]),
)

# -- an operator's writes ------------------------------------------------------------
CANCEL = Sql(
    f"""WITH old AS (SELECT id, state, lease_token FROM tasks WHERE id = %(id)s FOR UPDATE)
    UPDATE tasks t SET state = '{S.CANCELLED.value}', lease_token = NULL,
        finished_at = %(now)s, updated_at = %(now)s
    FROM old WHERE t.id = old.id AND old.state IN ({_in(Event.CANCEL)})
    RETURNING {_FULL}, old.state AS old_state, old.lease_token AS old_token""",
    lambda row: (to_task(row), TaskState(row["old_state"]), row["old_token"]),
)
RETRY = Sql(
    f"""UPDATE tasks t SET state = '{states.target(Event.RETRY).value}', scheduled_at = NULL,
        finished_at = NULL, updated_at = %(now)s, max_retries = {REQUEUED_BUDGET}
    WHERE t.id = %(id)s AND t.state IN ({_in(Event.RETRY)})
    RETURNING {_FULL}""",
    to_task,
)

# -- the manager's polling -----------------------------------------------------------
PROMOTE_DUE = Sql(
    f"""UPDATE tasks t SET state = '{states.target(Event.PROMOTE).value}', updated_at = %(now)s
    WHERE t.id = ANY(ARRAY(
        SELECT id FROM tasks
        WHERE state IN ({_in(Event.PROMOTE)}) AND scheduled_at <= %(now)s
        ORDER BY scheduled_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
    RETURNING {_BASIC}""",
    to_task,
)
NEXT_DUE = Sql(
    f"SELECT min(scheduled_at) AS due FROM tasks WHERE state IN ({_in(Event.PROMOTE)})",
    _one("due"),
)
SCAN_OPEN = Sql(
    f"""SELECT {_BASIC} FROM tasks t
    WHERE t.state IN ({_listed([S.PENDING, S.RUNNING])})
      AND (%(after)s::uuid IS NULL OR t.id > %(after)s)
    ORDER BY t.id LIMIT %(limit)s""",
    to_task,
)


# -- the attempt log (dtq/domain/attempts.py) -------------------------------------------
def _logged(kind: str, message: str, traceback: str, permanent: str) -> str:
    """SET clause appending the attempt that ends now (the row's attempt,
    worker and start) to attempt_log, dropping the oldest past the cap."""
    entry = f"""jsonb_build_object('attempt', t.attempts, 'worker_id', t.worker_id,
        'started_at', t.started_at, 'ended_at', %(now)s::timestamptz,
        'error_type', {kind}, 'error_message', {message},
        'error_traceback', left({traceback}, {attempts.LOGGED_TRACEBACK_LIMIT}),
        'error_permanent', {permanent})"""
    return f"""attempt_log = CASE
        WHEN jsonb_array_length(t.attempt_log) >= {attempts.ATTEMPT_LOG_SIZE} THEN t.attempt_log - 0
        ELSE COALESCE(t.attempt_log, '[]') END || jsonb_build_array({entry})"""


# -- leases --------------------------------------------------------------------------
LEASE = Sql(
    f"""UPDATE tasks t SET state = '{states.target(Event.LEASE).value}',
        attempts = t.attempts + 1, lease_token = v.token, worker_id = v.worker,
        started_at = %(now)s, updated_at = %(now)s
    FROM (VALUES %(rows)s) AS v(id, token, worker)
    WHERE t.id = v.id::uuid AND t.state IN ({_in(Event.LEASE)})
    RETURNING {_FULL}""",
    to_task,
)
COMPLETE = Sql(
    f"""UPDATE tasks t SET state = '{states.target(Event.COMPLETE).value}',
        result = v.result::bytea, lease_token = NULL, finished_at = %(now)s,
        updated_at = %(now)s
    FROM (VALUES %(rows)s) AS v(id, token, result)
    WHERE t.id = v.id::uuid AND t.lease_token = v.token AND t.state IN ({_in(Event.COMPLETE)})
    RETURNING {_FENCED}""",
    to_task,
)
# A failed attempt: lock the running tasks, decide in Python, then write.
LOCK_RUNNING = Sql(
    f"""SELECT {_BASIC} FROM tasks t
    WHERE t.id = ANY(%(ids)s) AND t.state = '{S.RUNNING.value}' FOR UPDATE""",
    to_task,
)
RESOLVE = Sql(
    f"""UPDATE tasks t SET state = v.state, scheduled_at = v.scheduled_at::timestamptz,
        finished_at = v.finished_at::timestamptz, lease_token = NULL,
        error_message = v.msg, error_type = v.etype, error_traceback = v.tb,
        error_permanent = v.perm::smallint, updated_at = %(now)s,
        {_logged("v.etype", "v.msg", "v.tb", "v.perm::int = 1")}
    FROM (VALUES %(rows)s)
        AS v(id, token, state, scheduled_at, finished_at, msg, etype, tb, perm)
    WHERE t.id = v.id::uuid AND t.lease_token = v.token AND t.state = '{S.RUNNING.value}'
    RETURNING {_BASIC}""",
    to_task,
)
PENDING_OF = Sql(
    f"SELECT {_BASIC} FROM tasks t WHERE t.id = ANY(%(ids)s) AND t.state = '{S.PENDING.value}'",
    to_task,
)
_RELEASED_LOG = _logged(
    f"COALESCE(%(etype)s, '{attempts.RELEASED}')",
    f"COALESCE(%(msg)s, '{attempts.RELEASED_MESSAGE}')",
    "''",
    "false",
)
# A server's take-back (revoked) leaves its mark as the task's last error; a
# worker's own hand-back (etype NULL) does not.
RELEASE = Sql(
    f"""UPDATE tasks t SET state = '{states.target(Event.EXPIRE).value}',
        max_retries = {RELEASED_BUDGET}, lease_token = NULL, updated_at = %(now)s,
        error_type = COALESCE(%(etype)s, t.error_type),
        error_message = COALESCE(%(msg)s, t.error_message),
        {_RELEASED_LOG}
    FROM (VALUES %(rows)s) AS v(id, token)
    WHERE t.id = v.id::uuid AND t.lease_token = v.token AND t.state IN ({_in(Event.EXPIRE)})
    RETURNING {_BASIC}""",
    to_task,
)

# -- dead letters and retention ------------------------------------------------------
_DEAD = f"""SELECT id FROM tasks
    WHERE state = '{S.DEAD_LETTERED.value}' AND tenant = %(tenant)s AND queue = %(queue)s
      AND (%(type)s::text IS NULL OR type = %(type)s)
      AND (%(after)s::uuid IS NULL OR id > %(after)s)"""
REQUEUE_DEAD = Sql(
    f"""UPDATE tasks t SET state = '{states.apply(S.DEAD_LETTERED, Event.RETRY).value}',
        scheduled_at = NULL, finished_at = NULL, updated_at = %(now)s,
        max_retries = {REQUEUED_BUDGET}
    WHERE t.id = ANY(ARRAY({_DEAD} ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
      AND t.state = '{S.DEAD_LETTERED.value}'
    RETURNING {_BASIC}""",
    to_task,
)
COUNT_DEAD = Sql(f"SELECT count(*) AS n FROM ({_DEAD}) d", _one("n"))
PURGE_DEAD = Sql(
    f"""DELETE FROM tasks t
    WHERE t.id = ANY(ARRAY({_DEAD} ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
      AND t.state = '{S.DEAD_LETTERED.value}'
    RETURNING t.id""",
    _one("id"),
)
# Finished tasks, except dead letters, which stay until an operator re-queues or
# purges them, and the groups whose callback goes with them. Small
# transactions: a backlog goes in repeated calls. Oldest first: the ORDER BY
# makes the plan walk tasks_finished_idx (whose predicate is these states);
# without it, when many rows qualify, the planner picks a Seq Scan that reads
# the whole table whenever fewer than `limit` are left (benchmarks/pg_scale.py).
PURGE_FINISHED = Sql(
    f"""WITH gone AS (DELETE FROM tasks WHERE id = ANY(ARRAY(
        SELECT id FROM tasks
        WHERE state IN ({_listed(states.TERMINAL - {S.DEAD_LETTERED})})
          AND finished_at < %(before)s
        ORDER BY finished_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)) RETURNING id),
    groups AS (DELETE FROM task_groups WHERE callback_id IN (SELECT id FROM gone))
    SELECT count(*) AS n FROM gone""",
    _one("n"),
)

# -- queues --------------------------------------------------------------------------
SET_PAUSED = Sql(
    """INSERT INTO queues (tenant, name, paused, updated_at)
    VALUES (%(tenant)s, %(name)s, %(paused)s, %(now)s)
    ON CONFLICT (tenant, name) DO UPDATE
    SET paused = excluded.paused, updated_at = excluded.updated_at
    RETURNING name""",
    _one("name"),
)
PAUSED = Sql(
    "SELECT tenant, name, paused FROM queues",
    lambda row: (tenant_queue(row["tenant"], row["name"]), row["paused"]),
)
DELETE_QUEUE = Sql(
    "DELETE FROM queues WHERE tenant = %(tenant)s AND name = %(name)s RETURNING name",
    _one("name"),
)

# -- tenants -------------------------------------------------------------------------
ADD_TENANT = Sql(
    """INSERT INTO tenants (name, weight, created_at) VALUES (%(name)s, %(weight)s, %(now)s)
    ON CONFLICT (name) DO NOTHING RETURNING name""",
    _one("name"),
)
LIST_TENANTS = Sql("SELECT name, weight, created_at FROM tenants ORDER BY name", tenant)
GET_TENANT = Sql("SELECT name, weight, created_at FROM tenants WHERE name = %(name)s", tenant)

# -- API keys ------------------------------------------------------------------------
ADD_KEY = Sql(
    """INSERT INTO api_keys (id, name, role, queues, tenant, digest, created_at, expires_at)
    VALUES (%(id)s, %(name)s, %(role)s, %(queues)s, %(tenant)s, %(digest)s, %(created_at)s,
        %(expires_at)s)
    RETURNING id""",
    _one("id"),
)
_KEY_COLUMNS = "id, name, role, queues, tenant, created_at, expires_at, revoked_at, last_used_at"
FIND_KEY = Sql(
    f"SELECT {_KEY_COLUMNS}, digest FROM api_keys WHERE id = %(id)s",
    lambda row: (api_key(row), row["digest"]),
)
LIST_KEYS = Sql(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at", api_key)
REVOKE_KEY = Sql(
    """UPDATE api_keys SET revoked_at = %(now)s WHERE id = %(id)s AND revoked_at IS NULL
    RETURNING id""",
    _one("id"),
)
KEY_IDS = Sql("SELECT id FROM api_keys WHERE id = %(id)s", _one("id"))
KEYS_USED = Sql(
    "UPDATE api_keys SET last_used_at = %(now)s WHERE id = ANY(%(ids)s) RETURNING id",
    _one("id"),
)

# -- the audit log ---------------------------------------------------------------------
ADD_AUDIT_EVENT = Sql(
    """INSERT INTO audit_events (at, actor, role, action, target, outcome, detail, tenant)
    VALUES (%(at)s, %(actor)s, %(role)s, %(action)s, %(target)s, %(outcome)s, %(detail)s::jsonb,
        %(tenant)s)
    RETURNING id""",
    _one("id"),
)
AUDIT_PAGE = Sql(
    """SELECT id, at, actor, role, action, target, outcome, detail, tenant FROM audit_events
    WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s)
      AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
      AND (%(actor)s::text IS NULL OR actor = %(actor)s)
      AND (%(before)s::bigint IS NULL OR id < %(before)s)
    ORDER BY id DESC LIMIT %(limit)s""",
    audit_event,
)

SELECT_ONE = Sql("SELECT 1 AS one", _one("one"))

# -- transactional enqueue (dtq.enqueue_in) and the manager's LISTEN -------------------
DUE_CHANNEL = "dtq_due"  # NOTIFYed at the commit of a task due now
NOTIFY_DUE = f"SELECT pg_notify('{DUE_CHANNEL}', '')"
WAKE_DUE = Sql(f"{NOTIFY_DUE}::text AS n", _one("n"))  # the same, in a transaction
EARLIER_BY_KEY = (
    "SELECT id, request_hash FROM tasks"
    " WHERE tenant = 'default' AND queue = %s AND idempotency_key = %s"
)

# -- quotas and rate limits --------------------------------------------------------------
_TENANT_LIMITS = (
    "tenant, submit_rate, submit_burst, max_queued, updated_at, max_running, key_max_running,"
    " key_weights"
)
TENANT_LIMITS = Sql(f"SELECT {_TENANT_LIMITS} FROM tenant_limits ORDER BY tenant", tenant_limits)
SET_TENANT_LIMITS = Sql(
    f"""INSERT INTO tenant_limits ({_TENANT_LIMITS})
    VALUES (%(tenant)s, %(submit_rate)s, %(submit_burst)s, %(max_queued)s, %(now)s,
        %(max_running)s, %(key_max_running)s, %(key_weights)s::jsonb)
    ON CONFLICT (tenant) DO UPDATE SET submit_rate = excluded.submit_rate,
        submit_burst = excluded.submit_burst, max_queued = excluded.max_queued,
        updated_at = excluded.updated_at, max_running = excluded.max_running,
        key_max_running = excluded.key_max_running, key_weights = excluded.key_weights
    RETURNING {_TENANT_LIMITS}""",
    tenant_limits,
)
_RATES = "queue, task_type, rate, burst, updated_at"
DISPATCH_RATES = Sql(
    f"SELECT {_RATES} FROM dispatch_rates ORDER BY queue, task_type", dispatch_rate
)
SET_DISPATCH_RATE = Sql(
    f"""INSERT INTO dispatch_rates ({_RATES})
    VALUES (%(queue)s, %(task_type)s, %(rate)s, %(burst)s, %(now)s)
    ON CONFLICT (queue, task_type) DO UPDATE SET rate = excluded.rate,
        burst = excluded.burst, updated_at = excluded.updated_at
    RETURNING {_RATES}""",
    dispatch_rate,
)
DELETE_DISPATCH_RATE = Sql(
    """DELETE FROM dispatch_rates WHERE queue = %(queue)s AND task_type = %(task_type)s
    RETURNING queue""",
    _one("queue"),
)
# The tenant's tasks not yet running nor terminal. The state index serves it.
_QUEUED = _listed([S.PENDING, S.SCHEDULED, S.FAILED])
COUNT_QUEUED = Sql(
    f"SELECT count(*) AS n FROM tasks WHERE state IN ({_QUEUED}) AND tenant = %(tenant)s",
    _one("n"),
)

# -- schedules -------------------------------------------------------------------------
# Every write of an operator NOTIFYs the managers at its commit (they sleep until
# the next fire time, which the write may have moved). The last run's state is
# read from its task (gone after retention: NULL).
SCHEDULES_CHANNEL = "dtq_schedules"
_SCHEDULE_COLUMNS = (
    "name", "cron", "time_zone", "interval_ms", "task_type", "payload", "queue", "priority",
    "max_retries", "timeout_ms", "overlap", "catch_up", "catch_up_limit", "paused", "origin",
    "next_fire_at", "last_fire_at", "last_task_id", "created_at", "updated_at",
)  # fmt: skip
_SCHEDULE = ", ".join(f"s.{c}" for c in _SCHEDULE_COLUMNS) + ", t.state AS last_state"
_WITH_STATE = " FROM s LEFT JOIN tasks t ON t.id = s.last_task_id"
_NOTIFY = f", pg_notify('{SCHEDULES_CHANNEL}', s.name)::text AS notified"
_DEFINITION = [c for c in _SCHEDULE_COLUMNS if c not in ("name", "last_fire_at", "last_task_id",
                                                         "created_at")]  # fmt: skip
CREATE_SCHEDULE = Sql(
    f"""WITH s AS (INSERT INTO schedules ({", ".join(_SCHEDULE_COLUMNS)})
        VALUES ({", ".join(f"%({c})s" for c in _SCHEDULE_COLUMNS)})
        ON CONFLICT (name) DO NOTHING RETURNING *)
    SELECT {_SCHEDULE}{_NOTIFY}{_WITH_STATE}""",
    to_schedule,
)
# The next fire time is written only with `retime` (the timing or the pause
# changed): otherwise a fire committed since the caller read the row stays.
_SET = ", ".join(
    "next_fire_at = CASE WHEN %(retime)s THEN %(next_fire_at)s ELSE next_fire_at END"
    if c == "next_fire_at"
    else f"{c} = %({c})s"
    for c in _DEFINITION
)
UPDATE_SCHEDULE = Sql(
    f"""WITH s AS (UPDATE schedules SET {_SET}
        WHERE name = %(name)s RETURNING *)
    SELECT {_SCHEDULE}{_NOTIFY}{_WITH_STATE}""",
    to_schedule,
)
DELETE_SCHEDULE = Sql(
    f"""WITH s AS (DELETE FROM schedules WHERE name = %(name)s RETURNING name)
    SELECT s.name{_NOTIFY} FROM s""",
    _one("name"),
)
GET_SCHEDULE = Sql(
    f"WITH s AS (SELECT * FROM schedules WHERE name = %(name)s) SELECT {_SCHEDULE}{_WITH_STATE}",
    to_schedule,
)
LIST_SCHEDULES = Sql(
    f"""WITH s AS (SELECT * FROM schedules
        WHERE (%(after)s::text IS NULL OR name > %(after)s) ORDER BY name LIMIT %(limit)s)
    SELECT {_SCHEDULE}{_WITH_STATE} ORDER BY s.name""",
    to_schedule,
)
# The manager's: due schedules, each to exactly one manager at a time.
LOCK_DUE_SCHEDULES = Sql(
    f"""SELECT {_SCHEDULE} FROM schedules s LEFT JOIN tasks t ON t.id = s.last_task_id
    WHERE NOT s.paused AND s.next_fire_at <= %(now)s
    ORDER BY s.next_fire_at LIMIT %(limit)s FOR UPDATE OF s SKIP LOCKED""",
    to_schedule,
)
SCHEDULE_FIRED = Sql(
    """UPDATE schedules SET next_fire_at = %(next)s, last_fire_at = %(last_at)s,
        last_task_id = %(last_id)s
    WHERE name = %(name)s RETURNING name""",
    _one("name"),
)
SCHEDULE_RAN = Sql(
    """UPDATE schedules SET last_fire_at = %(at)s, last_task_id = %(id)s
    WHERE name = %(name)s RETURNING name""",
    _one("name"),
)
NEXT_SCHEDULE = Sql("SELECT min(next_fire_at) AS due FROM schedules WHERE NOT paused", _one("due"))

# -- flows (pg_flows.py) ---------------------------------------------------------------
# A task WAITING for its parent (a chain) or for its group (a callback) is
# released to SCHEDULED, due now, in the transaction of what it waited for;
# the scheduler promotes it (NOTIFY_DUE wakes it). These run as statements of
# their own after the write that finished the parents: under READ COMMITTED a
# statement's snapshot then includes a child whose submitter held the parent's
# row lock (LOCK_PARENTS) until its commit.
_RELEASED = f"""state = '{states.target(Event.UNBLOCK).value}',
        scheduled_at = GREATEST(COALESCE(c.scheduled_at, %(now)s), %(now)s), updated_at = %(now)s"""
LOCK_PARENTS = Sql(
    "SELECT id, state, tenant FROM tasks WHERE id = ANY(%(ids)s) ORDER BY id FOR SHARE",
    lambda row: (row["id"], TaskState(row["state"]), row["tenant"]),
)
RELEASE_CHILDREN = Sql(
    f"""UPDATE tasks c SET {_RELEASED}, parent_result = p.result
    FROM tasks p
    WHERE p.id = ANY(%(ids)s) AND p.state = '{S.COMPLETED.value}'
      AND c.parent_id = p.id AND c.state IN ({_in(Event.UNBLOCK)})
    RETURNING c.id""",
    _one("id"),
)
# The waiting children of parents that ended otherwise: cancelled, saying why
# (a step cancelled so passes its reason on). One level per statement, again
# until none is left: a statement's snapshot must be taken after the commit of
# a step submitted under its parent's row lock.
CANCEL_CHILDREN = Sql(
    f"""UPDATE tasks c SET state = '{S.CANCELLED.value}', finished_at = %(now)s,
        updated_at = %(now)s, error_type = 'ParentNotCompleted', error_permanent = 1,
        error_traceback = '',
        error_message = CASE WHEN p.error_type = 'ParentNotCompleted' THEN p.error_message
            ELSE 'cancelled: task ' || p.id || ' of its chain ended ' || p.state END
    FROM tasks p
    WHERE p.id = ANY(%(ids)s) AND p.state IN ({_listed(states.TERMINAL - {S.COMPLETED})})
      AND c.parent_id = p.id AND c.state = '{S.WAITING.value}'
    RETURNING c.id""",
    _one("id"),
)
# Groups: count the finished tasks down, one UPDATE per flush; the statement that
# makes a group's count 0 releases its callback (exactly one can: the row lock).
COUNT_DOWN = Sql(
    f"""WITH n AS (SELECT group_id, count(*) AS k FROM tasks
        WHERE id = ANY(%(ids)s) AND group_id IS NOT NULL GROUP BY group_id),
    counted AS (UPDATE task_groups g SET remaining = g.remaining - n.k
        FROM n WHERE g.id = n.group_id RETURNING g.id, g.callback_id, g.remaining)
    UPDATE tasks c SET {_RELEASED}
    FROM counted
    WHERE counted.remaining = 0 AND c.id = counted.callback_id
      AND c.state IN ({_in(Event.UNBLOCK)})
    RETURNING c.id, counted.id AS group_id""",
    lambda row: (row["id"], row["group_id"]),
)
GROUP_OUTCOMES = Sql(
    """SELECT id, state, result, error_message FROM tasks WHERE group_id = %(group)s
    ORDER BY id""",
    lambda row: (
        row["id"],
        TaskState(row["state"]),
        None if row["result"] is None else bytes(row["result"]),
        row["error_message"],
    ),
)
SET_PARENT_RESULT = Sql(
    "UPDATE tasks SET parent_result = %(result)s WHERE id = %(id)s RETURNING id", _one("id")
)
ADD_GROUP = Sql(
    """INSERT INTO task_groups (id, remaining, size, callback_id, created_at, tenant)
    VALUES (%(id)s, %(size)s, %(size)s, %(callback)s, %(now)s, %(tenant)s) RETURNING id""",
    _one("id"),
)
# Child tasks (WorkerService.SubmitChildTasks): the parent's row, locked FOR
# SHARE for the insert's transaction like a chain step's parent, so a cancel
# (FOR UPDATE) waits for the children and then sees them.
LOCK_LEASED_PARENT = Sql(
    "SELECT id, state, tenant, lease_token, root_id FROM tasks WHERE id = %(id)s FOR SHARE",
    lambda row: (
        TaskState(row["state"]),
        row["tenant"],
        row["lease_token"],
        row["root_id"] or row["id"],
    ),
)
# A chain step's root: its parent's root, or the parent itself.
SET_ROOTS = Sql(
    """UPDATE tasks c SET root_id = COALESCE(p.root_id, p.id) FROM tasks p
    WHERE c.id = ANY(%(ids)s) AND p.id = c.parent_id RETURNING c.id""",
    _one("id"),
)
# Cancelling a task cancels its unfinished children, a level per statement (as
# CANCEL_CHILDREN, for the same reason), returning the state each left and the
# lease token a running one held (its worker is told as for CancelTask).
CANCEL_TREE = Sql(
    f"""WITH old AS (SELECT id, state, lease_token FROM tasks
        WHERE parent_id = ANY(%(ids)s) AND state IN ({_in(Event.CANCEL)}) FOR UPDATE)
    UPDATE tasks t SET state = '{S.CANCELLED.value}', lease_token = NULL,
        finished_at = %(now)s, updated_at = %(now)s, error_permanent = 1, error_traceback = '',
        error_type = CASE WHEN old.state = '{S.WAITING.value}' THEN 'ParentNotCompleted'
            ELSE 'ParentCancelled' END,
        error_message = CASE WHEN old.state = '{S.WAITING.value}'
            THEN 'cancelled: task ' || t.parent_id || ' of its chain ended cancelled'
            ELSE 'cancelled: its parent task ' || t.parent_id || ' was cancelled' END
    FROM old WHERE t.id = old.id
    RETURNING {_BASIC}, old.state AS old_state, old.lease_token AS old_token""",
    lambda row: (to_task(row), TaskState(row["old_state"]), row["old_token"]),
)
# GetTask's family (FULL view only): children by state, the first ids (only
# those of the queues a caller limited to `queues` may see); a group's size and
# count, and its tasks by state.
_IN_QUEUES = "(%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))"
CHILD_COUNTS = Sql(
    f"""SELECT state, count(*) AS n FROM tasks WHERE parent_id = %(id)s AND {_IN_QUEUES}
    GROUP BY state""",
    lambda row: (TaskState(row["state"]), row["n"]),
)
FIRST_CHILDREN = Sql(
    f"""SELECT id FROM tasks WHERE parent_id = %(id)s AND {_IN_QUEUES}
    ORDER BY id LIMIT %(limit)s""",
    _one("id"),
)
GROUP_SIZE = Sql(
    "SELECT size, remaining FROM task_groups WHERE id = %(id)s",
    lambda row: (row["size"], row["remaining"]),
)
GROUP_COUNTS = Sql(
    "SELECT state, count(*) AS n FROM tasks WHERE group_id = %(id)s GROUP BY state",
    lambda row: (TaskState(row["state"]), row["n"]),
)
