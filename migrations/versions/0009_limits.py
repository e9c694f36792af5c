"""Quotas and rate limits: per tenant submit rate and queued cap, per task type
dispatch rate. Rows are the configuration; the buckets live in Redis.

Revision ID: 0009
Revises: 0007 (the lead re-chains it onto 0008, tenants, at merge)
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_limits",
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("submit_rate", sa.Float(precision=53)),
        sa.Column("submit_burst", sa.Integer),
        sa.Column("max_queued", sa.BigInteger),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("submit_rate > 0", name="tenant_limits_rate_check"),
        sa.CheckConstraint("submit_burst >= 1", name="tenant_limits_burst_check"),
        sa.CheckConstraint("max_queued >= 0", name="tenant_limits_queued_check"),
    )
    op.create_table(
        "dispatch_rates",
        sa.Column("queue", sa.Text, primary_key=True),
        sa.Column("task_type", sa.Text, primary_key=True),
        sa.Column("rate", sa.Float(precision=53), nullable=False),
        sa.Column("burst", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("rate > 0", name="dispatch_rates_rate_check"),
        sa.CheckConstraint("burst >= 1", name="dispatch_rates_burst_check"),
    )


def downgrade() -> None:
    op.drop_table("dispatch_rates")
    op.drop_table("tenant_limits")
