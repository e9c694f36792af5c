"""Flows: chains (a task waits for its parent), groups with a callback.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = "'pending', 'scheduled', 'running', 'completed', 'failed', 'cancelled', 'dead_lettered'"
STATES = OLD_STATES + ", 'waiting'"


def upgrade() -> None:
    op.add_column("tasks", sa.Column("parent_id", postgresql.UUID(as_uuid=True)))
    op.add_column("tasks", sa.Column("group_id", postgresql.UUID(as_uuid=True)))
    op.add_column("tasks", sa.Column("callback_of", postgresql.UUID(as_uuid=True)))
    op.add_column("tasks", sa.Column("parent_result", sa.LargeBinary))
    op.drop_constraint("tasks_state_check", "tasks")
    op.create_check_constraint("tasks_state_check", "tasks", f"state IN ({STATES})")
    op.create_index(
        "tasks_parent_idx",
        "tasks",
        ["parent_id"],
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.create_index(
        "tasks_group_idx",
        "tasks",
        ["group_id", "id"],
        postgresql_where=sa.text("group_id IS NOT NULL"),
    )
    op.create_table(
        "task_groups",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("remaining", sa.Integer, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("callback_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.Text, nullable=False, server_default=sa.text("'default'")),
        sa.CheckConstraint("remaining >= 0", name="task_groups_remaining_check"),
    )
    op.create_index("task_groups_callback_idx", "task_groups", ["callback_id"])


def downgrade() -> None:
    op.drop_table("task_groups")
    op.execute("DELETE FROM tasks WHERE state = 'waiting'")
    op.drop_constraint("tasks_state_check", "tasks")
    op.create_check_constraint("tasks_state_check", "tasks", f"state IN ({OLD_STATES})")
    op.drop_index("tasks_group_idx", "tasks")
    op.drop_index("tasks_parent_idx", "tasks")
    for column in ("parent_result", "callback_of", "group_id", "parent_id"):
        op.drop_column("tasks", column)
