"""Per-attempt history: the attempts that ended without a result, on the task.

Revision ID: 0014
Revises: 0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: a catalog change only, no table rewrite.
    op.add_column("tasks", sa.Column("attempt_log", postgresql.JSONB(none_as_null=True)))


def downgrade() -> None:
    op.drop_column("tasks", "attempt_log")
