"""Handlers of the fault-injection suite (`dtq worker -m tests.faults.handlers`).

Every execution is written to `fault_executions` in the suite's private
PostgreSQL (`DTQ_FAULTS_DSN`), so a test can tell whether an attempt was killed
before or after its side effect:
- `started`: the handler began (one row per attempt and worker process);
- `failed`: the attempt is about to raise (knob `fail_times`);
- `effect`: the side effect, the thing that must not happen twice.

Payload knobs: `sleep` (seconds before the effect), `effect_then_sleep`
(seconds after it), `crash` (os._exit before the effect, on every attempt: a
poison task), `fail_times` (the first N attempts raise).

Writes are retried across a PostgreSQL restart; a unique key makes a retried
insert whose first try did commit harmless.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg2
import psycopg2.extensions

from dtq import App, TaskContext

app = App("faults")
_local = threading.local()
RECORD_PATIENCE = 60.0  # seconds a handler waits for PostgreSQL to come back

INSERT = """
INSERT INTO fault_executions (task_id, attempt, worker_pid, phase)
VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""


def _connection() -> psycopg2.extensions.connection:
    conn: psycopg2.extensions.connection | None = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg2.connect(os.environ["DTQ_FAULTS_DSN"], connect_timeout=2)
        conn.autocommit = True
        _local.conn = conn
    return conn


def record(ctx: TaskContext, phase: str) -> None:
    deadline = time.monotonic() + RECORD_PATIENCE
    while True:
        try:
            with _connection().cursor() as cur:
                cur.execute(INSERT, (ctx.task_id, ctx.attempt, os.getpid(), phase))
            return
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            _local.conn = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@app.task("fault")
def fault(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    record(ctx, "started")
    if payload.get("crash"):
        os._exit(3)  # the worker process dies mid-task, every time
    if ctx.attempt <= payload.get("fail_times", 0):
        record(ctx, "failed")
        raise RuntimeError(f"attempt {ctx.attempt} fails as told")
    time.sleep(payload.get("sleep", 0))
    record(ctx, "effect")
    time.sleep(payload.get("effect_then_sleep", 0))
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@app.task("fault_spawn")
def fault_spawn(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Submits `children` `fault` tasks one at a time, `gap` seconds apart
    (a kill lands between two of them), then has its effect. A retried
    attempt submits the same children again: they must come back, not twice."""
    record(ctx, "started")
    made = []
    for i in range(int(payload["children"])):
        made.append(ctx.submit("fault", {"sleep": payload.get("child_sleep", 0.1), "i": i}).id)
        time.sleep(payload.get("gap", 0))
    record(ctx, "effect")
    return {"attempt": ctx.attempt, "pid": os.getpid(), "children": made}
