"""Tenants: every task, queue setting, API key and audit event belongs to one.
Existing rows go to tenant `default`; idempotency keys and unique-for digests
become per tenant.

Adding a NOT NULL column with a constant default rewrites no rows
(PostgreSQL 11+). The two task indexes are rebuilt, which takes a lock on
`tasks` for as long as that takes: run this migration in a quiet moment.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT = sa.text("'default'")


def _tenant() -> sa.Column[str]:
    return sa.Column("tenant", sa.Text, nullable=False, server_default=DEFAULT)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("weight", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.execute("INSERT INTO tenants (name) VALUES ('default')")
    op.add_column("tasks", _tenant())
    op.drop_index("tasks_idempotency_idx", "tasks")
    op.create_index(
        "tasks_idempotency_idx",
        "tasks",
        ["tenant", "queue", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index("tasks_unique_idx", "tasks")
    op.create_index(
        "tasks_unique_idx",
        "tasks",
        ["tenant", "queue", "unique_digest", "created_at"],
        postgresql_where=sa.text("unique_digest IS NOT NULL"),
    )
    op.add_column("queues", _tenant())
    op.drop_constraint("queues_pkey", "queues", type_="primary")
    op.create_primary_key("queues_pkey", "queues", ["tenant", "name"])
    op.add_column("audit_events", _tenant())
    op.create_index("audit_events_tenant", "audit_events", ["tenant", "id"])


def downgrade() -> None:
    op.drop_index("audit_events_tenant", "audit_events")
    op.drop_column("audit_events", "tenant")
    op.execute("DELETE FROM queues WHERE tenant <> 'default'")
    op.drop_constraint("queues_pkey", "queues", type_="primary")
    op.drop_column("queues", "tenant")
    op.create_primary_key("queues_pkey", "queues", ["name"])
    op.drop_index("tasks_unique_idx", "tasks")
    op.create_index(
        "tasks_unique_idx",
        "tasks",
        ["queue", "unique_digest", "created_at"],
        postgresql_where=sa.text("unique_digest IS NOT NULL"),
    )
    op.drop_index("tasks_idempotency_idx", "tasks")
    op.execute("DELETE FROM tasks WHERE tenant <> 'default'")
    op.drop_column("tasks", "tenant")
    op.create_index(
        "tasks_idempotency_idx",
        "tasks",
        ["queue", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_table("tenants")
