#!/usr/bin/env python
"""PostgreSQL at 10 M tasks: the plans and times of every hot statement.

Creates a database of its own (`dtq_scale`), applies the migrations with
`dtq db upgrade`, fills `tasks` with INSERT ... SELECT generate_series (30 days
of history: mostly completed, some pending, running, scheduled, retrying,
waiting, cancelled and dead-lettered, over several tenants, queues and types,
80 % with idempotency keys), ANALYZEs, then prints:

- for each statement of dtq/adapters/pg_sql.py on the hot paths, run with
  realistic arguments: EXPLAIN (ANALYZE, BUFFERS) summed up (plan nodes, the
  indexes used, a Seq Scan of `tasks` flagged, time); writes run in a
  transaction that is rolled back;
- list pages (ListTasks: keyset paging, 50 a page) for several filters:
  median and p99 of 50 consecutive pages, from the newest and from deep in;
- one retention tick as the manager runs it (dtq.adapters.pg_dead_letters with
  dtq.manager.retention.BATCH), each batch timed, the locks held sampled from
  a second connection, and a concurrent writer's latency meanwhile.

    nice python benchmarks/pg_scale.py                     # 10 M rows, dropped after
    python benchmarks/pg_scale.py --rows 200000 --keep     # small, kept
    python benchmarks/pg_scale.py --reuse                  # measure a kept database again

Not a test: it prints figures (benchmarks/RESULTS.md has a run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extras

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg, Values, render
from dtq.adapters.pg_dead_letters import PgDeadLetters
from dtq.adapters.pg_rows import as_datetime
from dtq.manager.retention import BATCH as RETENTION_BATCH
from dtq.manager.retention import PAUSE as RETENTION_PAUSE
from dtq.settings import Settings

ADMIN = os.environ.get("DTQ_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY = 86400.0
HISTORY_DAYS = 30
PAGE = 50  # ListTasks' default page size (dtq/app/tasks.py); the store reads one more

# Queues by share of the tasks (per 10,000), each with four task types.
QUEUES = [
    ("default", 5000), ("emails", 2000), ("reports", 1000), ("images", 800),
    ("webhooks", 600), ("billing", 300), ("exports", 200), ("sync", 95), ("rare", 5),
]  # fmt: skip
TYPES = ["send", "render", "sync", "notify"]


def db_url(name: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def connect(url: str, autocommit: bool = True) -> Any:
    conn = psycopg2.connect(url)
    psycopg2.extras.register_uuid(conn_or_curs=conn)
    conn.autocommit = autocommit
    return conn


def lower_priority(conn: Any) -> None:
    """Run this connection's backend at a low CPU priority (the machine is shared)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, 10)


# -- building the table ------------------------------------------------------------


def create_database(name: str) -> None:
    admin = connect(ADMIN)
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def drop_database(name: str) -> None:
    admin = connect(ADMIN)
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def migrate(url: str) -> None:
    env = {**os.environ, "DTQ_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "dtq.cli.main", "db", "upgrade"], env=env, check=True)


def _bucket(seed: int, modulo: int) -> str:
    return f"(abs(hashint4((i * {seed} + {seed})::int)) %% {modulo})"


def _queue_case() -> str:
    cases, upto = [], 0
    for name, share in QUEUES[:-1]:
        upto += share
        cases.append(f"WHEN q < {upto} THEN '{name}'")
    return f"CASE {' '.join(cases)} ELSE '{QUEUES[-1][0]}' END"


FILL = f"""
INSERT INTO tasks (id, queue, type, priority, state, attempts, max_retries, timeout_ms,
    lease_ms, payload, result, error_message, error_type, error_traceback, error_permanent,
    worker_id, lease_token, idempotency_key, request_hash, created_at, updated_at,
    scheduled_at, started_at, finished_at, tenant, fairness_key, unique_digest, parent_id,
    group_id)
SELECT
    (lpad(to_hex(ms), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
    queue, queue || '.' || (ARRAY{TYPES!r})[1 + {_bucket(7, len(TYPES))}],
    CASE WHEN p < 7 THEN 2 WHEN p < 9 THEN 1 ELSE 3 END,
    state,
    CASE WHEN state IN ('pending', 'scheduled', 'waiting') THEN 0
         WHEN state = 'dead_lettered' THEN 4 WHEN p = 0 THEN 2 ELSE 1 END,
    3, 300000, 30000,
    decode(repeat(h, 1 + p %% 8), 'hex'),
    CASE WHEN state = 'completed' THEN decode(substr(h, 1, 16), 'hex') END,
    CASE WHEN state IN ('dead_lettered', 'failed') THEN 'connection refused' END,
    CASE WHEN state IN ('dead_lettered', 'failed') THEN 'ConnectionError' END,
    CASE WHEN state IN ('dead_lettered', 'failed')
         THEN 'Traceback (most recent call last): ...' END,
    CASE WHEN state IN ('dead_lettered', 'failed') THEN 0 END,
    CASE WHEN state = 'running' THEN 'worker-' || (i %% 50) END,
    CASE WHEN state = 'running' THEN 'lease-' || h END,
    CASE WHEN k < 8 THEN 'key-' || i END,
    CASE WHEN k < 8 THEN decode(h || h, 'hex') END,
    created, COALESCE(finished, started, created),
    CASE WHEN state = 'scheduled'
              THEN %(now)s + make_interval(secs => {_bucket(17, 7 * 86400)} - 3600)
         WHEN state = 'failed' THEN %(now)s + make_interval(secs => {_bucket(17, 300)})
    END,
    started, finished,
    CASE WHEN t < 7 THEN 'default' WHEN t < 9 THEN 'acme' ELSE 'globex' END,
    '',
    CASE WHEN f = 1 THEN decode(substr(h, 1, 16), 'hex') END,
    CASE WHEN f = 2 OR state = 'waiting' THEN md5(h)::uuid END,
    CASE WHEN f = 3 THEN md5((i / 1000)::text)::uuid END
FROM (
    SELECT i, h, ms, queue, p, k, t, f, state, created,
        CASE WHEN state NOT IN ('pending', 'scheduled', 'waiting')
             THEN created + interval '0.4 s' END AS started,
        CASE WHEN state IN ('completed', 'cancelled', 'dead_lettered')
             THEN created + interval '1.6 s' END AS finished
    FROM (
        SELECT i, h, ms, {_queue_case()} AS queue, p, k, t, f,
            to_timestamp(ms / 1000.0) AS created,
            CASE WHEN i > %(rows)s - %(running)s THEN 'running'
                 WHEN i > %(rows)s - %(running)s - %(pending)s THEN 'pending'
                 WHEN s < 50 THEN 'dead_lettered'
                 WHEN s < 150 THEN 'cancelled'
                 WHEN s < 250 THEN 'scheduled'
                 WHEN s < 280 THEN 'failed'
                 WHEN s < 300 THEN 'waiting'
                 ELSE 'completed' END AS state
        FROM (
            SELECT i, md5(i::text) AS h,
                %(start_ms)s::bigint + (i * %(span_ms)s::bigint / %(rows)s) AS ms,
                {_bucket(3, 10000)} AS q, {_bucket(11, 10)} AS p, {_bucket(13, 10000)} AS s,
                {_bucket(5, 10)} AS t, {_bucket(19, 10)} AS k, {_bucket(23, 100)} AS f
            FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
        ) r
    ) c
) d
"""

GROUPS = """INSERT INTO task_groups (id, remaining, size, callback_id, created_at, tenant)
SELECT group_id, 0, count(*), (array_agg(id))[1], min(created_at), min(tenant)
FROM tasks WHERE group_id IS NOT NULL GROUP BY group_id"""


def fill(url: str, rows: int, now: float) -> dict[str, float]:
    """Fill `tasks` (indexes dropped first, built after: much faster); returns timings."""
    conn = connect(url)
    lower_priority(conn)
    timings: dict[str, float] = {}
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '512MB'")
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE tablename = 'tasks' AND indexname <> 'tasks_pkey'"
        )
        indexes = cur.fetchall()
        for name, _ in indexes:
            cur.execute(f"DROP INDEX {name}")
        args = {
            "rows": rows,
            "running": max(10, rows // 5000),
            "pending": max(50, rows // 200),
            "start_ms": int((now - HISTORY_DAYS * DAY) * 1000),
            "span_ms": int(HISTORY_DAYS * DAY * 1000 - 60_000),
            "now": as_datetime(now),
        }
        started = time.perf_counter()
        chunk = 1_000_000
        for lo in range(1, rows + 1, chunk):
            hi = min(rows, lo + chunk - 1)
            cur.execute(FILL, {**args, "lo": lo, "hi": hi})
            print(f"  filled {hi:,} rows ({time.perf_counter() - started:.0f} s)", flush=True)
        # A group's row for each group (retention deletes it with its callback).
        cur.execute(GROUPS)
        timings["insert"] = time.perf_counter() - started
        for name, definition in indexes:
            began = time.perf_counter()
            cur.execute(definition)
            timings[f"index {name}"] = time.perf_counter() - began
        began = time.perf_counter()
        cur.execute("VACUUM (ANALYZE) tasks")
        timings["vacuum analyze"] = time.perf_counter() - began
    conn.close()
    return timings


def sizes(cur: Any) -> list[tuple[str, int]]:
    cur.execute(
        """SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c
        WHERE c.relname = 'tasks' OR c.oid IN (SELECT indexrelid FROM pg_index
            WHERE indrelid = 'tasks'::regclass)
        ORDER BY 2 DESC"""
    )
    return [(str(n), int(s)) for n, s in cur.fetchall()]


# -- arguments picked from the data ----------------------------------------------------


def sample(cur: Any, where: str, columns: str = "id") -> tuple[Any, ...]:
    cur.execute(f"SELECT {columns} FROM tasks WHERE {where} LIMIT 1")
    row = cur.fetchone()
    assert row is not None, where
    return tuple(row)


def picks(cur: Any) -> dict[str, Any]:
    (running, token) = sample(cur, "state = 'running'", "id, lease_token")
    running_after = f"state = 'running' AND id > '{running}'"
    (running2, token2) = sample(cur, running_after, "id, lease_token")
    (pending,) = sample(cur, "state = 'pending'")
    (completed,) = sample(cur, "state = 'completed' AND parent_id IS NULL")
    (dead, dead_queue, dead_tenant) = sample(cur, "state = 'dead_lettered'", "id, queue, tenant")
    (parent,) = sample(cur, "parent_id IS NOT NULL", "parent_id")
    (group,) = sample(cur, "group_id IS NOT NULL", "group_id")
    (digest, digest_queue, digest_tenant) = sample(
        cur, "unique_digest IS NOT NULL", "unique_digest, queue, tenant"
    )
    (key, key_queue, key_tenant) = sample(
        cur, "idempotency_key IS NOT NULL", "idempotency_key, queue, tenant"
    )
    cur.execute("SELECT id FROM tasks ORDER BY id LIMIT 1 OFFSET (SELECT count(*) / 2 FROM tasks)")
    (middle,) = cur.fetchone()
    return {
        "running": running, "token": token, "running2": running2, "token2": token2,
        "pending": pending, "completed": completed, "dead": dead, "dead_queue": dead_queue,
        "dead_tenant": dead_tenant, "parent": parent, "group": group, "digest": bytes(digest),
        "digest_queue": digest_queue, "digest_tenant": digest_tenant, "key": key,
        "key_queue": key_queue, "key_tenant": key_tenant, "middle": middle,
    }  # fmt: skip


# -- statements ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str  # where it runs, for the table
    statement: sql.Sql[Any]
    args: dict[str, Any]
    write: bool = False


def new_rows(n: int, now: float) -> Values:
    at = as_datetime(now)
    rows = []
    for _ in range(n):
        rows.append(
            (str(uuid.uuid4()), "default", "default.send", 2, "pending", 0, 3, 300000, 30000,
             b"payload", f"fresh-{uuid.uuid4()}", b"h" * 32, at, at, None, None, None,
             "default", "", None, None, None)
        )  # fmt: skip
    return Values(rows, sql.INSERT_ROW)


def cases(p: dict[str, Any], now: float) -> list[Case]:
    at = as_datetime(now)
    listed = {"state": None, "type": None, "queue": None, "tenant": None, "before": None}
    lst = sql.LIST_TASKS_BASIC
    dead = {"tenant": p["dead_tenant"], "queue": p["dead_queue"], "type": None, "after": None}
    keys = Values([(p["key_tenant"], p["key_queue"], p["key"])], sql.KEY_ROW)
    return [
        # submitting
        Case("submit: idempotency look (ANY_KEY)", sql.ANY_KEY, {"keys": keys}),
        Case("submit: insert 1 (INSERT_FRESH)", sql.INSERT_FRESH, {"rows": new_rows(1, now)}, True),
        Case("submit: insert 100", sql.INSERT_FRESH, {"rows": new_rows(100, now)}, True),
        Case("submit: earlier by keys", sql.TASKS_BY_KEYS,
             {"tenant": p["key_tenant"], "queue": p["key_queue"], "keys": [p["key"]]}),
        Case("submit: unique_for match", sql.UNIQUE_MATCH,
             {"tenant": p["digest_tenant"], "queue": p["digest_queue"], "digest": p["digest"],
              "since": as_datetime(now - 7 * DAY), "states": None}),
        Case("submit: quota (COUNT_QUEUED)", sql.COUNT_QUEUED, {"tenant": "acme"}),
        # leases and outcomes
        Case("lease/start (LEASE)", sql.LEASE,
             {"rows": Values([(str(p["pending"]), "tok", "w1")]), "now": at}, True),
        Case("complete (COMPLETE)", sql.COMPLETE,
             {"rows": Values([(str(p["running"]), p["token"], b"ok")]), "now": at}, True),
        Case("fail: lock running", sql.LOCK_RUNNING, {"ids": [p["running"]]}, True),
        Case("fail: resolve (RESOLVE)", sql.RESOLVE,
             {"rows": Values([(str(p["running2"]), p["token2"], "failed", at, None, "m", "E",
                               "tb", 0)]), "now": at}, True),
        Case("release lease (RELEASE)", sql.RELEASE,
             {"rows": Values([(str(p["running"]), p["token"])]), "now": at}, True),
        # reads
        Case("get (GET_TASK)", sql.GET_TASK, {"id": p["completed"]}),
        Case("get many (GET_TASKS, 100)", sql.GET_TASKS, {"ids": [p["completed"]] * 100}),
        Case("list: no filter", lst, {**listed, "limit": PAGE + 1}),
        Case("list: tenant", lst, {**listed, "tenant": "acme", "limit": PAGE + 1}),
        Case("list: state=pending", lst, {**listed, "state": "pending", "limit": PAGE + 1}),
        Case("list: state=dead_lettered", lst,
             {**listed, "state": "dead_lettered", "limit": PAGE + 1}),
        Case("list: queue=billing", lst, {**listed, "queue": "billing", "limit": PAGE + 1}),
        Case("list: queue=rare", lst, {**listed, "queue": "rare", "limit": PAGE + 1}),
        Case("list: type=rare.send", lst, {**listed, "type": "rare.send", "limit": PAGE + 1}),
        Case("list: pending in rare", lst,
             {**listed, "state": "pending", "queue": "rare", "limit": PAGE + 1}),
        Case("list: deep page, no filter", lst,
             {**listed, "before": p["middle"], "limit": PAGE + 1}),
        Case("list: deep page, queue=billing", lst,
             {**listed, "queue": "billing", "before": p["middle"], "limit": PAGE + 1}),
        Case("queue stats (STATE_COUNTS)", sql.STATE_COUNTS, {"queue": None, "tenant": None}),
        # an operator's writes
        Case("cancel (CANCEL)", sql.CANCEL, {"id": p["pending"], "now": at}, True),
        Case("retry (RETRY)", sql.RETRY, {"id": p["dead"], "now": at}, True),
        Case("dead letters: count", sql.COUNT_DEAD, dead),
        Case("dead letters: requeue 1000", sql.REQUEUE_DEAD,
             {**dead, "now": at, "limit": 1000}, True),
        Case("dead letters: purge 1000", sql.PURGE_DEAD, {**dead, "limit": 1000}, True),
        # the manager
        Case("scheduler: next due (NEXT_DUE)", sql.NEXT_DUE, {}),
        Case("scheduler: promote (PROMOTE_DUE)", sql.PROMOTE_DUE,
             {"now": at, "limit": 1000}, True),
        Case("reconciler: open tasks (SCAN_OPEN)", sql.SCAN_OPEN, {"after": None, "limit": 5000}),
        Case("reconciler: next page", sql.SCAN_OPEN, {"after": p["middle"], "limit": 5000}),
        Case("retention (PURGE_FINISHED)", sql.PURGE_FINISHED,
             {"before": as_datetime(now - 7 * DAY), "limit": RETENTION_BATCH}, True),
        Case("schedules due (LOCK_DUE_SCHEDULES)", sql.LOCK_DUE_SCHEDULES,
             {"now": at, "limit": 100}, True),
        # flows
        Case("flows: lock parents", sql.LOCK_PARENTS, {"ids": [p["parent"]]}, True),
        Case("flows: release children", sql.RELEASE_CHILDREN,
             {"ids": [p["parent"]], "now": at}, True),
        Case("flows: cancel children", sql.CANCEL_CHILDREN,
             {"ids": [p["parent"]], "now": at}, True),
        Case("flows: count down", sql.COUNT_DOWN, {"ids": [p["completed"]], "now": at}, True),
        Case("flows: group outcomes", sql.GROUP_OUTCOMES, {"group": p["group"]}),
    ]  # fmt: skip


def walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from walk(child)


@dataclass
class Explained:
    nodes: list[str]
    indexes: list[str]
    seq_scan_tasks: bool
    ms: float
    buffers: int  # shared blocks hit + read


def explain(cur: Any, case: Case) -> Explained:
    statement = cur.mogrify(case.statement.text, render(cur, case.args)).decode()
    times: list[float] = []
    plan: dict[str, Any] = {}
    for _ in range(3):
        if case.write:
            cur.execute("BEGIN")
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement)
        (result,) = cur.fetchone()
        if case.write:
            cur.execute("ROLLBACK")
        plan = result[0]
        times.append(plan["Planning Time"] + plan["Execution Time"])
    nodes = list(walk(plan["Plan"]))
    node_types = []
    for node in nodes:
        kind = node["Node Type"]
        if node.get("Relation Name") and "Scan" in kind:
            kind += f" {node['Relation Name']}"
        node_types.append(kind)
    top = plan["Plan"]
    return Explained(
        nodes=list(dict.fromkeys(node_types)),
        indexes=sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
        seq_scan_tasks=any(
            n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "tasks" for n in nodes
        ),
        ms=statistics.median(times),
        buffers=int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0)),
    )


# -- list pages ------------------------------------------------------------------------

LIST_FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("no filter", {}),
    ("tenant=acme", {"tenant": "acme"}),
    ("state=completed", {"state": "completed"}),
    ("state=pending", {"state": "pending"}),
    ("state=dead_lettered", {"state": "dead_lettered"}),
    ("queue=default", {"queue": "default"}),
    ("queue=billing", {"queue": "billing"}),
    ("queue=rare", {"queue": "rare"}),
    ("type=billing.send", {"type": "billing.send"}),
    ("state=dead_lettered, queue=billing", {"state": "dead_lettered", "queue": "billing"}),
    ("tenant=acme, queue=emails", {"tenant": "acme", "queue": "emails"}),
]


def pages(cur: Any, filters: dict[str, Any], before: Any, count: int) -> list[float]:
    """Milliseconds of `count` consecutive pages, each after the last id of the one before."""
    args = {"state": None, "type": None, "queue": None, "tenant": None, **filters}
    took: list[float] = []
    for _ in range(count):
        if sum(took) > 20_000:  # a slow filter: enough pages to judge
            break
        began = time.perf_counter()
        cur.execute(sql.LIST_TASKS_BASIC.text, {**args, "before": before, "limit": PAGE + 1})
        rows = cur.fetchall()
        took.append((time.perf_counter() - began) * 1000)
        if len(rows) <= PAGE:
            break
        before = rows[PAGE - 1][0]
    return took


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


# -- retention ------------------------------------------------------------------------


class LockSampler(threading.Thread):
    """Samples pg_locks of every other backend of the database every few ms."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.conn = connect(url)
        self.seen: Counter[tuple[str, str, str]] = Counter()
        self.waiting = 0
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stop.is_set():
                cur.execute(
                    """SELECT l.locktype, l.mode, COALESCE(c.relname, ''), l.granted
                    FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation
                    WHERE l.pid <> pg_backend_pid() AND l.pid IN (
                        SELECT pid FROM pg_stat_activity WHERE datname = current_database())
                      AND l.locktype IN ('relation', 'tuple', 'transactionid')"""
                )
                for locktype, mode, rel, granted in cur.fetchall():
                    self.seen[(locktype, mode, rel if not rel.startswith("pg_") else "pg_*")] += 1
                    self.waiting += 0 if granted else 1
                self.samples += 1
                time.sleep(0.002)
        self.conn.close()


class Writer(threading.Thread):
    """Submits one task every 10 ms and lists a page, timing each, meanwhile."""

    def __init__(self, url: str, now: float) -> None:
        super().__init__(daemon=True)
        self.conn = connect(url)
        self.now = now
        self.inserts: list[float] = []
        self.lists: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stop.is_set():
                began = time.perf_counter()
                args = render(cur, {"rows": new_rows(1, self.now)})
                cur.execute(sql.INSERT_FRESH.text, args)
                self.inserts.append((time.perf_counter() - began) * 1000)
                self.lists.append(pages(cur, {}, None, 1)[0])
                time.sleep(0.01)
        self.conn.close()


async def retention_tick(url: str, before: float, max_batches: int) -> list[float]:
    """What dtq.manager.retention.Retention.tick does, each batch timed."""
    pg = Pg(url, 1, timeout=Settings.model_fields["database_timeout"].default)
    store = PgDeadLetters(pg)
    took = []
    try:
        for _ in range(max_batches):
            began = time.perf_counter()
            deleted = await store.purge_finished(before, RETENTION_BATCH)
            took.append((time.perf_counter() - began) * 1000)
            if deleted < RETENTION_BATCH:
                break
            await asyncio.sleep(RETENTION_PAUSE)
    finally:
        pg.close()
    return took


# -- the report ------------------------------------------------------------------------


def report_statements(cur: Any, p: dict[str, Any], now: float) -> list[dict[str, Any]]:
    print("\n| statement | plan nodes | indexes | Seq Scan tasks | ms | buffers |")
    print("|---|---|---|---|---:|---:|")
    out = []
    for case in cases(p, now):
        e = explain(cur, case)
        print(
            f"| {case.name} | {', '.join(e.nodes)} | {', '.join(e.indexes) or '-'} "
            f"| {'**yes**' if e.seq_scan_tasks else 'no'} | {e.ms:.2f} | {e.buffers} |",
            flush=True,
        )
        out.append({"name": case.name, **e.__dict__})
    return out


def report_pages(cur: Any, p: dict[str, Any], count: int) -> list[dict[str, Any]]:
    print(f"\nList pages ({PAGE} tasks, keyset; {count} consecutive pages from each start)")
    print("\n| filter | first page ms | newest: median / p99 ms | deep: median / p99 ms |")
    print("|---|---:|---:|---:|")
    out = []
    for label, filters in LIST_FILTERS:
        newest = pages(cur, filters, None, count)
        deep = pages(cur, filters, p["middle"], count)
        print(
            f"| {label} | {newest[0]:.1f} | {statistics.median(newest):.1f} / "
            f"{p99(newest):.1f} | {statistics.median(deep):.1f} / {p99(deep):.1f} |",
            flush=True,
        )
        out.append({"filter": label, "newest": newest, "deep": deep})
    return out


def report_retention(url: str, now: float, days: float, max_batches: int) -> dict[str, Any]:
    sampler, writer = LockSampler(url), Writer(url, now)
    sampler.start()
    writer.start()
    time.sleep(5)  # the writer alone first: its latency without retention
    quiet_inserts = list(writer.inserts)
    began = time.perf_counter()
    took = asyncio.run(retention_tick(url, now - days * DAY, max_batches))
    elapsed = time.perf_counter() - began
    sampler.stop.set()
    writer.stop.set()
    sampler.join()
    writer.join()
    during = writer.inserts[len(quiet_inserts) :]
    print(
        f"\nRetention tick (finished_at older than {days:g} days, batches of"
        f" {RETENTION_BATCH}, at most {max_batches}):"
        f" {len(took)} batches in {elapsed:.1f} s;"
        f" batch median {statistics.median(took):.1f} ms, p99 {p99(took):.1f} ms,"
        f" max {max(took):.1f} ms"
    )
    print(
        f"A writer alone, before: submit median {statistics.median(quiet_inserts):.2f} ms,"
        f" p99 {p99(quiet_inserts):.2f} ms, max {max(quiet_inserts):.2f} ms"
    )
    print(
        f"A writer meanwhile: submit median {statistics.median(during):.2f} ms,"
        f" p99 {p99(during):.2f} ms, max {max(during):.2f} ms ({len(during)} submits);"
        f" list page median {statistics.median(writer.lists):.2f} ms,"
        f" max {max(writer.lists):.2f} ms"
    )
    print(f"Locks seen in {sampler.samples} samples of pg_locks (others' backends):")
    for (locktype, mode, rel), n in sorted(sampler.seen.items()):
        print(f"  {locktype:14} {mode:18} {rel or '-':28} {n}")
    print(f"  lock waits seen: {sampler.waiting}")
    return {
        "batches": took,
        "elapsed": elapsed,
        "writer_inserts": during,
        "writer_alone": quiet_inserts,
        "writer_lists": writer.lists,
        "locks": {" ".join(k): v for k, v in sampler.seen.items()},
        "waits": sampler.waiting,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--database", default="dtq_scale")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="measure the kept database again")
    parser.add_argument("--pages", type=int, default=50, help="consecutive list pages per start")
    parser.add_argument("--retention-days", type=float, default=29.0)
    parser.add_argument("--retention-batches", type=int, default=300)
    parser.add_argument("--json", help="write the figures to this file too")
    opts = parser.parse_args()
    url = db_url(opts.database)
    now = time.time()
    results: dict[str, Any] = {"rows": opts.rows}
    try:
        if not opts.reuse:
            create_database(opts.database)
            migrate(url)
            print(f"filling {opts.rows:,} rows ...", flush=True)
            results["build"] = fill(url, opts.rows, now)
            for what, seconds in results["build"].items():
                print(f"  {what}: {seconds:.1f} s")
        conn = connect(url)
        with conn.cursor() as cur:
            if opts.reuse:
                cur.execute("SELECT max(created_at) FROM tasks")
                now = cur.fetchone()[0].timestamp() + 60
                cur.execute("VACUUM (ANALYZE) tasks")
            cur.execute("SELECT state, count(*) FROM tasks GROUP BY state ORDER BY 2 DESC")
            counts = cur.fetchall()
            print("\ntasks by state: " + ", ".join(f"{s} {n:,}" for s, n in counts))
            print("sizes: " + ", ".join(f"{n} {s / 2**20:,.0f} MiB" for n, s in sizes(cur)))
            results["sizes"] = sizes(cur)
            p = picks(cur)
            results["statements"] = report_statements(cur, p, now)
            results["pages"] = report_pages(cur, p, opts.pages)
        conn.close()
        results["retention"] = report_retention(
            url, now, opts.retention_days, opts.retention_batches
        )
        if opts.json:
            with open(opts.json, "w") as out:
                json.dump(results, out, default=str, indent=1)
    finally:
        if not opts.keep:
            drop_database(opts.database)


if __name__ == "__main__":
    main()
