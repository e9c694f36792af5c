"""Index for retention: finished tasks by age.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "tasks_finished_idx",
        "tasks",
        ["finished_at"],
        postgresql_where=sa.text("state IN ('completed', 'cancelled')"),
    )


def downgrade() -> None:
    op.drop_index("tasks_finished_idx", table_name="tasks")
