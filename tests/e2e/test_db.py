"""`dtq db upgrade` on an empty PostgreSQL database, through the real CLI."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, text

from dtq.adapters import pg_migrate
from tests.support.env import sqlalchemy_url, with_database
from tests.support.procs import ROOT, dtq_args


@pytest.fixture
def empty_database(admin_db_url: str) -> Iterator[str]:
    name = f"dtq_empty_{secrets.token_hex(4)}"
    admin = create_engine(sqlalchemy_url(admin_db_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin_db_url, name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def dtq(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DTQ_DATABASE_URL": url}
    return subprocess.run(
        dtq_args(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_upgrade_creates_the_schema_and_is_idempotent(empty_database: str) -> None:
    before = dtq(empty_database, "db", "current")
    assert "current: none" in before.stdout
    first = dtq(empty_database, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert str(pg_migrate.head()) in first.stdout
    assert dtq(empty_database, "db", "upgrade").returncode == 0  # nothing to do, no error
    engine = create_engine(sqlalchemy_url(empty_database))
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("tasks")}
    finally:
        engine.dispose()
    assert {"id", "state", "payload", "lease_token", "idempotency_key"} <= columns


def test_downgrade_to_base_removes_the_schema(empty_database: str) -> None:
    assert dtq(empty_database, "db", "upgrade").returncode == 0
    down = dtq(empty_database, "db", "downgrade", "base")
    assert down.returncode == 0, down.stderr
    engine = create_engine(sqlalchemy_url(empty_database))
    try:
        assert not inspect(engine).has_table("tasks")
    finally:
        engine.dispose()
