"""Alembic migrations (migrations/ ships in the package as dtq.migrations)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

import dtq.migrations


def _config(dsn: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(dtq.migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", dsn.replace("%", "%%"))
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    command.upgrade(_config(dsn), revision)


def downgrade(dsn: str, revision: str) -> None:
    command.downgrade(_config(dsn), revision)


def current(dsn: str) -> str | None:
    engine = create_engine(dsn, poolclass=pool.NullPool)
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    return ScriptDirectory.from_config(_config("postgresql://")).get_current_head()
