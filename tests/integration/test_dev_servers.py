"""PostgreSQL and Redis as child processes (dtq.dev.servers): they start, answer,
keep or forget data across restarts as promised, and leave no process behind,
even when their parent is killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from dtq.dev import PostgresServer, RedisServer, ServerError
from dtq.dev.binaries import find_postgres_bindir, find_redis_server
from tests.support.procs import ROOT


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder PostgreSQL can reach when it runs as nobody (not pytest's 0700 tmp)."""
    path = Path(tempfile.mkdtemp(prefix="dtq-dev-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := [p for p in pids if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def backend_pids(url: str) -> list[int]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(  # not our own backend: it ends with this connection
                "SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL AND pid <> pg_backend_pid()"
            )
            return [int(row[0]) for row in cur.fetchall()]
    finally:
        conn.close()


def test_postgres_starts_with_a_dtq_database_and_keeps_data_across_restarts(base: Path) -> None:
    with PostgresServer(base / "pg", settings={"fsync": "off"}) as pg:
        assert pg.url.endswith("/dtq") and "127.0.0.1" in pg.url
        conn = psycopg2.connect(pg.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SHOW server_encoding")
            assert cur.fetchone() == ("UTF8",)
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone() == ("127.0.0.1",)
            cur.execute("CREATE TABLE kept (n int)")
            cur.execute("INSERT INTO kept VALUES (42)")
        conn.close()
        if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as nobody
            assert pg.pid is not None
            assert Path(f"/proc/{pg.pid}").stat().st_uid == pg.run_as.pw_uid  # type: ignore[union-attr]
        port = pg.port
        pg.restart()
        assert pg.port == port
        conn = psycopg2.connect(pg.url)
        with conn.cursor() as cur:
            cur.execute("SELECT n FROM kept")
            assert cur.fetchall() == [(42,)]
        conn.close()
    assert not pg.alive()


def test_postgres_data_survives_kill_9(base: Path) -> None:
    pg = PostgresServer(base / "pg", settings={"fsync": "off"})
    with pg:
        conn = psycopg2.connect(pg.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t AS SELECT 1 AS n")
        conn.close()
        pg.kill()
        pg.start()  # crash recovery
        pg.wait_ready()
        conn = psycopg2.connect(pg.url)
        with conn.cursor() as cur:
            cur.execute("SELECT n FROM t")
            assert cur.fetchall() == [(1,)]
        conn.close()


def test_kill_ends_postgres_and_all_its_backends(base: Path) -> None:
    pg = PostgresServer(base / "pg", settings={"fsync": "off"})
    with pg:
        idle = psycopg2.connect(pg.url)  # a client backend that would linger
        pids = [pg.pid or 0, *backend_pids(pg.url)]
        assert len(pids) > 2
        pg.kill()
        assert not pg.alive()
        assert gone_within(pids, 5) == []
        idle.close()


def test_redis_without_persistence_forgets_on_restart(base: Path) -> None:
    with RedisServer(base / "redis") as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        info = client.config_get("bind")
        assert info["bind"].split() == ["127.0.0.1"]
        server.restart()
        assert client.get("k") is None
        client.close()
    assert not server.alive()


def test_redis_with_appendonly_keeps_data_across_restarts(base: Path) -> None:
    with RedisServer(base / "redis", appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.restart()
        assert client.get("k") == b"v"
        client.close()


def test_redis_kill_is_immediate(base: Path) -> None:
    server = RedisServer(base / "redis")
    with server:
        pid = server.pid or 0
        server.kill()
        assert not running(pid)
        server.start()
        server.wait_ready(10)
        assert redis.Redis.from_url(server.url).ping()


CHILD = """
import sys, time
from dtq.dev import PostgresServer, RedisServer
base = sys.argv[1]
pg = PostgresServer(base + "/pg", settings={"fsync": "off"})
rd = RedisServer(base + "/redis")
for s in (pg, rd):
    s.start()
for s in (pg, rd):
    s.wait_ready()
print(pg.pid, rd.pid, pg.url, flush=True)
time.sleep(600)
"""


def test_servers_die_with_their_parent(base: Path) -> None:
    """A supervisor killed with SIGKILL (no cleanup code runs) leaves no server."""
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(base)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert parent.stdout is not None
        pg_pid, redis_pid, url = parent.stdout.readline().split()
        family = [int(pg_pid), int(redis_pid), *backend_pids(url)]
        assert all(running(p) for p in family)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    assert gone_within(family, 10) == []


def test_an_explicit_binary_that_does_not_exist_is_refused(base: Path) -> None:
    with pytest.raises(ServerError):
        PostgresServer(base / "pg", bindir=base)
    with pytest.raises(ServerError):
        RedisServer(base / "redis", binary=base / "nothing")


def test_binaries_are_discovered() -> None:
    assert (find_postgres_bindir() / "postgres").exists()
    assert find_redis_server().name == "redis-server"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must drop privileges")
def test_a_data_dir_nobody_cannot_reach_is_explained(base: Path) -> None:
    private = base / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(ServerError, match="cannot enter"):
        PostgresServer(private / "pg").start()
