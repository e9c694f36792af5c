"""Alembic migrations (migrations/ ships in the package as dtq.migrations)."""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool


def _script_location() -> str:
    module = importlib.import_module("dtq.migrations")  # migrations/, mapped by pyproject
    return str(Path(str(module.__file__)).parent)


def _config(dsn: str) -> Config:
    config = Config()
    config.set_main_option("script_location", _script_location())
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
