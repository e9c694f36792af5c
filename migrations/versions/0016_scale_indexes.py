"""Indexes for a table of millions of tasks (measured by benchmarks/pg_scale.py on
10 M tasks; benchmarks/RESULTS.md):

- tasks_queue_idx (queue, id) and tasks_type_idx (type, id): ListTasks filtered by
  queue or type reads its page, newest first, from the index, instead of walking
  the primary key through every other queue's tasks (or a Seq Scan and a sort).
- tasks_counts_idx (state, queue, tenant, id) over the tasks waiting to run or
  dead-lettered: the queue statistics the manager reads every few seconds
  (STATE_COUNTS) and the tenants' queued quota (COUNT_QUEUED) are index-only
  scans, and dead letters of one queue are listed, counted, re-queued and purged
  in id order without reading the other dead letters.
- tasks_open_idx (id) over the PENDING and RUNNING tasks: the reconciler's scan
  (SCAN_OPEN) reads them in id order instead of walking the whole primary key
  (4.9 s on 10 M tasks, past the statement timeout).

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
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTED = "state IN ('pending', 'scheduled', 'failed', 'dead_lettered')"
OPEN = "state IN ('pending', 'running')"
INDEXES = ("tasks_queue_idx", "tasks_type_idx", "tasks_counts_idx", "tasks_open_idx")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:  # what an interrupted build left
            op.drop_index(name, "tasks", postgresql_concurrently=True, if_exists=True)
        for name, columns, where in (
            ("tasks_queue_idx", ["queue", "id"], None),
            ("tasks_type_idx", ["type", "id"], None),
            ("tasks_counts_idx", ["state", "queue", "tenant", "id"], COUNTED),
            ("tasks_open_idx", ["id"], OPEN),
        ):
            op.create_index(
                name,
                "tasks",
                columns,
                postgresql_where=sa.text(where) if where else None,
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.drop_index(name, "tasks", postgresql_concurrently=True)
