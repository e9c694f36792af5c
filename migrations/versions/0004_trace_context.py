"""Trace context of each task: the submitter's W3C `traceparent`/`tracestate`,
carried to the worker that runs it. NULL when the submission was not traced.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable without a default: adding it rewrites no rows.
    op.add_column("tasks", sa.Column("trace_context", postgresql.JSONB))


def downgrade() -> None:
    op.drop_column("tasks", "trace_context")
