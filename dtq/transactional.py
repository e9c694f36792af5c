"""`dtq.enqueue_in`: submit a task inside the application's own transaction.

    with Session(engine) as session, session.begin():
        session.add(User(email=email))
        task_id = dtq.enqueue_in(session, "send_welcome", {"email": email})
    # the task exists only if the transaction committed

The row goes into dtq's `tasks` table on the same PostgreSQL, as SCHEDULED and
due at once (or at `delay`/`at`), with a `NOTIFY dtq_due` that PostgreSQL
delivers only at commit: the queue manager, listening, promotes it to its
queue at once (River's InsertTx, Oban's insert in a Repo transaction). A
rolled-back transaction leaves neither the task nor the notification. Checked
as `Client.submit` checks (TypeError/ValueError for bad Python values,
`DtqError` INVALID_ARGUMENT for what the server would refuse); an idempotency
key already used returns that task's id.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Values, render
from dtq.adapters.pg_inserts import reused
from dtq.adapters.pg_rows import new_row
from dtq.api.convert import submit_spec
from dtq.client.requests import PriorityName, Seconds, Submission, submit_request
from dtq.domain import validation
from dtq.domain.validation import Limits


def enqueue_in(
    session: Session | Connection,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: PriorityName | None = None,
    delay: Seconds | None = None,
    at: datetime | None = None,
    max_retries: int | None = None,
    timeout: Seconds | None = None,
    lease_duration: Seconds | None = None,
    idempotency_key: str | None = None,
    limits: Limits | None = None,
) -> uuid.UUID:
    """Insert a task in `session`'s transaction; its id. See the module doc."""
    request = submit_request(
        Submission(
            type, payload or {}, queue, priority, delay, at, max_retries, timeout,
            lease_duration, idempotency_key,
        )
    )  # fmt: skip
    now = time.time()
    new = validation.new_task(submit_spec(request), limits or Limits(), now)
    new = replace(new, scheduled_at=new.scheduled_at or now)  # SCHEDULED, due now
    connection = session.connection() if isinstance(session, Session) else session
    dbapi: Any = connection.connection.dbapi_connection
    with dbapi.cursor() as cursor:
        rows = Values([new_row(new, now)], sql.INSERT_ROW)
        cursor.execute(sql.INSERT_TASKS.text, render(cursor, {"rows": rows}))
        if cursor.fetchone() is None:  # the key was used: that task, if the same request
            return _earlier(cursor, new.queue, new.idempotency_key or "", new.request_hash)
        cursor.execute(sql.NOTIFY_DUE)
    return new.id


def _earlier(cursor: Any, queue: str, key: str, request_hash: bytes) -> uuid.UUID:
    cursor.execute(sql.EARLIER_BY_KEY, (queue, key))
    found = cursor.fetchone()
    if found is None or bytes(found[1]) != request_hash:
        raise reused()
    return uuid.UUID(str(found[0]))
