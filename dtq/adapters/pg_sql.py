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

from dtq.adapters.pg_rows import Row, api_key, audit_event, to_task
from dtq.adapters.pg_tables import tasks
from dtq.domain import states
from dtq.domain.model import TaskState
from dtq.domain.states import Event

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


BASIC = [c.name for c in tasks.c if c.name not in ("payload", "result", "request_hash")]
FULL = [c.name for c in tasks.c if c.name != "request_hash"]
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
    "scheduled_at", "trace_context", "unique_digest",
)  # fmt: skip
INSERT_ROW = "(%s::uuid, " + ", ".join(["%s"] * (len(NEW_COLUMNS) - 3)) + ", %s::jsonb, %s)"
INSERT_TASKS = Sql(
    f"INSERT INTO tasks ({', '.join(NEW_COLUMNS)}) VALUES %(rows)s"
    " ON CONFLICT DO NOTHING RETURNING id",
    _one("id"),
)
# Fresh keys (the common case: dtq.Client makes one up for every submit): one look,
# then the INSERT without ON CONFLICT, which fails whole on a key taken meanwhile.
ANY_KEY = Sql(
    "SELECT 1 AS one FROM tasks t JOIN (VALUES %(keys)s) AS k(queue, key)"
    " ON t.queue = k.queue AND t.idempotency_key = k.key LIMIT 1",
    _one("one"),
)
KEY_ROW = "(%s, %s)"
INSERT_FRESH = Sql(INSERT_TASKS.text.replace(" ON CONFLICT DO NOTHING", ""), _one("id"))
TASKS_BY_KEYS = Sql(
    f"SELECT {_FULL}, t.request_hash FROM tasks t"
    " WHERE t.queue = %(queue)s AND t.idempotency_key = ANY(%(keys)s)",
    _task_with("request_hash"),
)

# unique_for: one transaction at a time per (queue, digest), then the latest match.
LOCK_UNIQUE = Sql("SELECT pg_advisory_xact_lock(%(key)s)::text AS locked", _one("locked"))
UNIQUE_MATCH = Sql(
    f"SELECT {_FULL} FROM tasks t"
    " WHERE t.queue = %(queue)s AND t.unique_digest = %(digest)s AND t.created_at > %(since)s"
    " AND (%(states)s::text[] IS NULL OR t.state = ANY(%(states)s::text[]))"
    " ORDER BY t.created_at DESC LIMIT 1",
    to_task,
)

# -- reading -------------------------------------------------------------------------
GET_TASK = Sql(f"SELECT {_FULL} FROM tasks t WHERE t.id = %(id)s", to_task)
GET_TASK_BASIC = Sql(f"SELECT {_BASIC} FROM tasks t WHERE t.id = %(id)s", to_task)
GET_TASKS = Sql(f"SELECT {_BASIC} FROM tasks t WHERE t.id = ANY(%(ids)s)", to_task)
_LISTED = """ FROM tasks t
    WHERE (%(state)s::text IS NULL OR t.state = %(state)s)
      AND (%(type)s::text IS NULL OR t.type = %(type)s)
      AND (%(queue)s::text IS NULL OR t.queue = %(queue)s)
      AND (%(before)s::uuid IS NULL OR t.id < %(before)s)
    ORDER BY t.id DESC LIMIT %(limit)s"""
LIST_TASKS = Sql(f"SELECT {_FULL}{_LISTED}", to_task)
LIST_TASKS_BASIC = Sql(f"SELECT {_BASIC}{_LISTED}", to_task)
STATE_COUNTS = Sql(
    f"""SELECT queue, state, count(*) AS n FROM tasks
    WHERE state IN ({_listed([S.SCHEDULED, S.FAILED, S.DEAD_LETTERED])})
      AND (%(queue)s::text IS NULL OR queue = %(queue)s)
    GROUP BY queue, state""",
    lambda row: ((row["queue"], TaskState(row["state"])), row["n"]),
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
        error_permanent = v.perm::smallint, updated_at = %(now)s
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
RELEASE = Sql(
    f"""UPDATE tasks t SET state = '{states.target(Event.EXPIRE).value}',
        max_retries = {RELEASED_BUDGET}, lease_token = NULL, updated_at = %(now)s
    FROM (VALUES %(rows)s) AS v(id, token)
    WHERE t.id = v.id::uuid AND t.lease_token = v.token AND t.state IN ({_in(Event.EXPIRE)})
    RETURNING {_BASIC}""",
    to_task,
)

# -- dead letters and retention ------------------------------------------------------
_DEAD = f"""SELECT id FROM tasks
    WHERE state = '{S.DEAD_LETTERED.value}' AND queue = %(queue)s
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
# purges them. Small transactions: a backlog goes in repeated calls.
PURGE_FINISHED = Sql(
    f"""WITH gone AS (DELETE FROM tasks WHERE id = ANY(ARRAY(
        SELECT id FROM tasks
        WHERE state IN ({_listed(states.TERMINAL - {S.DEAD_LETTERED})})
          AND finished_at < %(before)s
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED)) RETURNING 1)
    SELECT count(*) AS n FROM gone""",
    _one("n"),
)

# -- queues --------------------------------------------------------------------------
SET_PAUSED = Sql(
    """INSERT INTO queues (name, paused, updated_at) VALUES (%(name)s, %(paused)s, %(now)s)
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
    RETURNING name""",
    _one("name"),
)
PAUSED = Sql("SELECT name, paused FROM queues", lambda row: (row["name"], row["paused"]))
DELETE_QUEUE = Sql("DELETE FROM queues WHERE name = %(name)s RETURNING name", _one("name"))

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
    """INSERT INTO audit_events (at, actor, role, action, target, outcome, detail)
    VALUES (%(at)s, %(actor)s, %(role)s, %(action)s, %(target)s, %(outcome)s, %(detail)s::jsonb)
    RETURNING id""",
    _one("id"),
)
AUDIT_PAGE = Sql(
    """SELECT id, at, actor, role, action, target, outcome, detail FROM audit_events
    WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s)
      AND (%(actor)s::text IS NULL OR actor = %(actor)s)
      AND (%(before)s::bigint IS NULL OR id < %(before)s)
    ORDER BY id DESC LIMIT %(limit)s""",
    audit_event,
)

SELECT_ONE = Sql("SELECT 1 AS one", _one("one"))

# -- transactional enqueue (dtq.enqueue_in) and the manager's LISTEN -------------------
DUE_CHANNEL = "dtq_due"  # NOTIFYed at the commit of a task due now
NOTIFY_DUE = f"SELECT pg_notify('{DUE_CHANNEL}', '')"
EARLIER_BY_KEY = "SELECT id, request_hash FROM tasks WHERE queue = %s AND idempotency_key = %s"
