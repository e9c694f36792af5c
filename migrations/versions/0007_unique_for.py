"""Unique for a window: the digest of what makes a submission the same
(type and payload, or the caller's unique key), indexed per queue and time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable without a default: adding it rewrites no rows.
    op.add_column("tasks", sa.Column("unique_digest", sa.LargeBinary))
    op.create_index(
        "tasks_unique_idx",
        "tasks",
        ["queue", "unique_digest", "created_at"],
        postgresql_where=sa.text("unique_digest IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("tasks_unique_idx", "tasks")
    op.drop_column("tasks", "unique_digest")
