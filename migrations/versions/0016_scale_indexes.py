"""Indexes for a table of millions of tasks (measured by benchmarks/pg_scale.py):

- tasks_queue_idx (queue, id) and tasks_type_idx (type, id): ListTasks filtered by
  queue or type, newest first, reads its page from the index instead of walking
  the primary key through every other queue's tasks (or a Seq Scan and a sort).
- tasks_counts_idx (state, tenant, queue) for the tasks not yet running nor
  finished, and dead letters: the queue statistics the manager reads every few
  seconds (STATE_COUNTS) and the tenants' queued quota (COUNT_QUEUED) count them
  with an index-only scan, not a heap read per counted task.

Built CONCURRENTLY (outside the migration's transaction): writers are not
blocked while they build on a large table (10 M tasks: see benchmarks/RESULTS.md).
A build that failed leaves an invalid index behind; the next upgrade drops it
first and builds it again.

Revision ID: 0016
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTED = "state IN ('pending', 'scheduled', 'failed', 'dead_lettered')"


INDEXES = ("tasks_queue_idx", "tasks_type_idx", "tasks_counts_idx")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:  # what an interrupted build left
            op.drop_index(name, "tasks", postgresql_concurrently=True, if_exists=True)
        op.create_index("tasks_queue_idx", "tasks", ["queue", "id"], postgresql_concurrently=True)
        op.create_index("tasks_type_idx", "tasks", ["type", "id"], postgresql_concurrently=True)
        op.create_index(
            "tasks_counts_idx",
            "tasks",
            ["state", "tenant", "queue"],
            postgresql_where=sa.text(COUNTED),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.drop_index(name, "tasks", postgresql_concurrently=True)
