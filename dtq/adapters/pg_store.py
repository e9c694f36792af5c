"""TaskStore on PostgreSQL, composed of small parts over one `Pg` (which runs
every statement on the event loop; the statements are in pg_sql.py):

    PgInserts      insert (group commit, idempotency keys)
    PgFlows        insert_group (chains and groups: see pg_flows)
    PgInserts      insert_children (a running task's children)
    PgTasks        get, get_many, list_tasks, state_counts, cancel (with its
                   descendants), retry, family
    PgLeases       lease, complete (group commit), fail, expire, release
    PgDeadLetters  requeue_dead, count_dead, purge_dead, purge_finished
    PgPoll         promote_due, next_due, scan_open (the queue manager's polling)
"""

from __future__ import annotations

from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_dead_letters import PgDeadLetters
from dtq.adapters.pg_flows import PgFlows
from dtq.adapters.pg_inserts import PgInserts
from dtq.adapters.pg_leases import PgLeases
from dtq.adapters.pg_poll import PgPoll
from dtq.adapters.pg_tasks import PgTasks


class PgStore:
    """PostgreSQL implementation of `dtq.ports.TaskStore`: each method is its part's."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg
        self.ping = pg.ping
        inserts, tasks, leases = PgInserts(pg), PgTasks(pg), PgLeases(pg)
        dead, poll = PgDeadLetters(pg), PgPoll(pg)
        self.insert = inserts.insert
        self.insert_group = PgFlows(pg).insert_group
        self.get = tasks.get
        self.get_many = tasks.get_many
        self.list_tasks = tasks.list_tasks
        self.state_counts = tasks.state_counts
        self.cancel = tasks.cancel
        self.family = tasks.family
        self.insert_children = inserts.insert_children
        self.retry = tasks.retry
        self.lease = leases.lease
        self.complete = leases.complete
        self.fail = leases.fail
        self.expire = leases.expire
        self.release = leases.release
        self.requeue_dead = dead.requeue_dead
        self.count_dead = dead.count_dead
        self.purge_dead = dead.purge_dead
        self.purge_finished = dead.purge_finished
        self.promote_due = poll.promote_due
        self.next_due = poll.next_due
        self.scan_open = poll.scan_open
