"""Create the tasks table.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = "'pending', 'scheduled', 'running', 'completed', 'failed', 'cancelled', 'dead_lettered'"


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("timeout_ms", sa.Integer, nullable=False),
        sa.Column("lease_ms", sa.Integer, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("result", sa.LargeBinary),
        sa.Column("error_message", sa.Text),
        sa.Column("error_type", sa.Text),
        sa.Column("error_traceback", sa.Text),
        sa.Column("error_permanent", sa.SmallInteger),
        sa.Column("worker_id", sa.Text),
        sa.Column("lease_token", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_hash", sa.LargeBinary),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(f"state IN ({STATES})", name="tasks_state_check"),
        sa.CheckConstraint("priority BETWEEN 1 AND 3", name="tasks_priority_check"),
    )
    op.create_index(
        "tasks_idempotency_idx",
        "tasks",
        ["queue", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "tasks_due_idx",
        "tasks",
        ["scheduled_at"],
        postgresql_where=sa.text("state IN ('scheduled', 'failed')"),
    )
    op.create_index("tasks_state_idx", "tasks", ["state", "id"])


def downgrade() -> None:
    op.drop_table("tasks")
