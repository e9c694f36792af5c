"""Child tasks: root_id, and the indexes that list a task's children and tree.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

`tasks_parent_idx` gains `id` (ListTasks by parent, newest first); the cancel
cascade and chain releases use its prefix as before. Chain steps stored before
this revision get their root: the first task of their chain.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
WITH RECURSIVE tree(id, root) AS (
    SELECT c.id, p.id FROM tasks c JOIN tasks p ON p.id = c.parent_id
    WHERE p.parent_id IS NULL
  UNION ALL
    SELECT c.id, tree.root FROM tasks c JOIN tree ON c.parent_id = tree.id
)
UPDATE tasks t SET root_id = tree.root FROM tree WHERE t.id = tree.id
"""


def upgrade() -> None:
    op.add_column("tasks", sa.Column("root_id", postgresql.UUID(as_uuid=True)))
    op.execute(BACKFILL)
    op.drop_index("tasks_parent_idx", "tasks")
    op.create_index(
        "tasks_parent_idx",
        "tasks",
        ["parent_id", "id"],
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.create_index(
        "tasks_root_idx",
        "tasks",
        ["root_id", "id"],
        postgresql_where=sa.text("root_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("tasks_root_idx", "tasks")
    op.drop_index("tasks_parent_idx", "tasks")
    op.create_index(
        "tasks_parent_idx",
        "tasks",
        ["parent_id"],
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.drop_column("tasks", "root_id")
