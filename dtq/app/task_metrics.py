"""What happens to tasks, as Prometheus counters and histograms.

One place translates task events into metrics so the labels stay the same
everywhere: queue, type and priority (never ids), plus an outcome or reason.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtq import metrics
from dtq.domain.model import Task, TaskState

OUTCOME = {
    TaskState.COMPLETED: "completed",
    TaskState.FAILED: "failed",
    TaskState.DEAD_LETTERED: "dead_lettered",
}


def _priority(task: Task) -> str:
    return task.priority.name.lower()


def leased(tasks: Iterable[Task]) -> None:
    """Queue wait of tasks just leased: from ready (created, or due) to started."""
    for t in tasks:
        if t.started_at is None:
            continue
        ready = max(t.created_at, t.scheduled_at or t.created_at)
        wait = max(0.0, t.started_at - ready)
        metrics.task_queue_wait.labels(t.queue, _priority(t)).observe(wait)


def finished(tasks: Iterable[Task]) -> None:
    """Outcomes recorded: counts by outcome, time since the lease, retries."""
    for t in tasks:
        outcome = OUTCOME.get(t.state)
        if outcome is None:
            continue
        metrics.tasks_finished.labels(t.queue, t.type, _priority(t), outcome).inc()
        if t.started_at is not None:
            end = t.finished_at if t.finished_at is not None else t.updated_at
            took = max(0.0, end - t.started_at)
            metrics.task_duration.labels(t.queue, t.type, outcome).observe(took)
        if t.state == TaskState.FAILED:
            retried([t], "failure")


def expired(tasks: Iterable[Task]) -> None:
    """Leases that ran out: the task goes back (a retry) or to the dead letters."""
    for t in tasks:
        if t.state == TaskState.DEAD_LETTERED:
            metrics.tasks_finished.labels(t.queue, t.type, _priority(t), "dead_lettered").inc()
        else:
            retried([t], "lease_expired")


def retried(tasks: Iterable[Task], reason: str) -> None:
    for t in tasks:
        metrics.tasks_retried.labels(t.queue, t.type, _priority(t), reason).inc()
