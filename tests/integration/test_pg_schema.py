"""The Alembic migrations create exactly the schema of dtq/adapters/pg_tables.py."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, Text, create_engine, inspect, pool

from dtq.adapters import pg_migrate
from dtq.adapters.pg_tables import metadata
from tests.integration.helpers import sa_dsn


def differences(pg_url: str, wanted: MetaData) -> list[object]:
    engine = create_engine(sa_dsn(pg_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, wanted))
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_table_metadata(pg_url: str) -> None:
    assert differences(pg_url, metadata) == []


def test_the_comparison_sees_a_difference(pg_url: str) -> None:
    changed = MetaData()
    for name, original in metadata.tables.items():
        copy = original.to_metadata(changed)
        if name == "tasks":
            copy.append_column(Column("extra", Text))
    (diff,) = differences(pg_url, changed)
    assert diff[0] == "add_column"  # type: ignore[index]


def test_database_is_at_the_head_revision(pg_url: str) -> None:
    assert pg_migrate.current(sa_dsn(pg_url)) == pg_migrate.head()


def test_partial_indexes_and_checks_exist(pg_url: str) -> None:
    engine = create_engine(sa_dsn(pg_url), poolclass=pool.NullPool)
    try:
        found = inspect(engine)
        indexes = {i["name"]: i for i in found.get_indexes("tasks")}
        checks = {c["name"] for c in found.get_check_constraints("tasks")}
    finally:
        engine.dispose()
    assert set(indexes) == {
        "tasks_idempotency_idx",
        "tasks_due_idx",
        "tasks_state_idx",
        "tasks_finished_idx",
        "tasks_unique_idx",
        "tasks_parent_idx",
        "tasks_group_idx",
        "tasks_root_idx",
        "tasks_queue_idx",
        "tasks_type_idx",
        "tasks_counts_idx",
        "tasks_open_idx",
    }
    assert indexes["tasks_idempotency_idx"]["unique"]
    assert checks == {"tasks_state_check", "tasks_priority_check"}
