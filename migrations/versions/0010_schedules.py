"""Recurring schedules: cron or interval, a task template, overlap and catch-up
policies, the next fire time and the last run.

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("cron", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("time_zone", sa.Text, nullable=False, server_default=sa.text("'UTC'")),
        sa.Column("interval_ms", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("task_type", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("max_retries", sa.Integer),
        sa.Column("timeout_ms", sa.Integer),
        sa.Column("overlap", sa.Text, nullable=False),
        sa.Column("catch_up", sa.Text, nullable=False),
        sa.Column("catch_up_limit", sa.Integer, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True)),
        sa.Column("last_fire_at", sa.DateTime(timezone=True)),
        sa.Column("last_task_id", postgresql.UUID(as_uuid=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "overlap IN ('allow', 'skip', 'cancel_previous')", name="schedules_overlap_check"
        ),
        sa.CheckConstraint("catch_up IN ('skip', 'one', 'all')", name="schedules_catch_up_check"),
        sa.CheckConstraint("origin IN ('api', 'code')", name="schedules_origin_check"),
    )
    op.create_index(
        "schedules_due_idx",
        "schedules",
        ["next_fire_at"],
        postgresql_where=sa.text("NOT paused"),
    )


def downgrade() -> None:
    op.drop_table("schedules")
