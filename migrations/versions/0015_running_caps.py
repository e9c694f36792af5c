"""Caps on running tasks per tenant (in each queue) and per fairness key, and
the weights of fairness keys: read by every server with the other limits and
handed to the lease script.

Revision ID: 0015
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0015"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tenant_limits", sa.Column("max_running", sa.Integer))
    op.add_column("tenant_limits", sa.Column("key_max_running", sa.Integer))
    op.add_column(
        "tenant_limits",
        sa.Column("key_weights", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.create_check_constraint("tenant_limits_running_check", "tenant_limits", "max_running >= 1")
    op.create_check_constraint(
        "tenant_limits_key_running_check", "tenant_limits", "key_max_running >= 1"
    )


def downgrade() -> None:
    op.drop_constraint("tenant_limits_key_running_check", "tenant_limits")
    op.drop_constraint("tenant_limits_running_check", "tenant_limits")
    for column in ("key_weights", "key_max_running", "max_running"):
        op.drop_column("tenant_limits", column)
