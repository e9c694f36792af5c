"""The fault suite's own PostgreSQL and Redis (dtq.dev servers in a temporary
folder), so that killing, flushing or restarting them disturbs no other test."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import redis

from dtq.dev import PostgresServer, RedisServer
from tests.support.procs import ROOT, dtq_args

FAULT_TABLE = """
CREATE TABLE IF NOT EXISTS fault_executions (
    task_id uuid NOT NULL,
    attempt int NOT NULL,
    worker_pid int NOT NULL,
    phase text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (task_id, attempt, worker_pid, phase)
)
"""


@dataclass
class Backends:
    """PostgreSQL and Redis children of this test session, in a folder of their own."""

    base: Path
    pg: PostgresServer
    redis: RedisServer

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Backends]:
        base = Path(tempfile.mkdtemp(prefix="dtq-faults-"))
        base.chmod(0o755)  # PostgreSQL runs as nobody when we are root
        pg = PostgresServer(base / "pg", settings={"fsync": "off", "max_connections": "300"})
        rd = RedisServer(base / "redis")
        backends = cls(base, pg, rd)
        try:
            for server in (pg, rd):
                server.start()
            for server in (pg, rd):
                server.wait_ready(60)
            backends.migrate()
            yield backends
        finally:
            rd.kill()
            pg.kill()
            shutil.rmtree(base, ignore_errors=True)

    def migrate(self) -> None:
        """`dtq db upgrade`, then the table the handlers write to."""
        env = {**os.environ, "DTQ_DATABASE_URL": self.pg.url}
        done = subprocess.run(
            dtq_args("db", "upgrade"),
            check=False,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        self.sql(FAULT_TABLE)

    def ensure_up(self) -> None:
        """Start again whatever a failed scenario left down."""
        for server in (self.pg, self.redis):
            if not server.alive():
                server.start()
                server.wait_ready(60)

    def reset(self) -> None:
        self.sql("TRUNCATE tasks, queues, schedules, fault_executions")
        client = redis.Redis.from_url(self.redis.url)
        client.flushall()
        client.close()

    def sql(self, statement: str, params: Sequence[Any] = (), patience: float = 30.0) -> list[Any]:
        """Run one statement (retried while PostgreSQL restarts); rows if any."""
        deadline = time.monotonic() + patience
        while True:
            try:
                conn = psycopg2.connect(self.pg.url, connect_timeout=2)
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(statement, params)
                    return list(cur.fetchall()) if cur.description else []
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            finally:
                conn.close()
