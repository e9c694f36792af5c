"""What happens to tasks, as Prometheus counters and histograms.

One place translates task events into metrics so the labels stay the same
everywhere: queue, type and priority (never ids), plus an outcome or reason.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from prometheus_client import Counter, Histogram

from dtq import metrics
from dtq.domain.model import Task, TaskState

OUTCOME = {
    TaskState.COMPLETED: "completed",
    TaskState.FAILED: "failed",
    TaskState.DEAD_LETTERED: "dead_lettered",
}


def _q(task: Task) -> str:
    return metrics.queue_label(task.tenant_queue)


def _t(task: Task) -> str:
    return metrics.type_label(task.type)


def _priority(task: Task) -> str:
    return task.priority.name.lower()


def _count(counter: Counter, labelled: Iterable[tuple[str, ...]]) -> None:
    """One `labels()` lookup and one increment per distinct label set (a batch
    of tasks is mostly one queue, type and priority)."""
    for labels, n in collections.Counter(labelled).items():
        counter.labels(*labels).inc(n)


def submitted(tasks: Iterable[Task]) -> None:
    _count(metrics.tasks_submitted, ((_q(t), _t(t), _priority(t)) for t in tasks))


def leased(tasks: Iterable[Task]) -> None:
    """Queue wait of tasks just leased: from ready (created, or due) to started."""
    series: dict[tuple[str, str], Histogram] = {}
    for t in tasks:
        if t.started_at is None:
            continue
        ready = max(t.created_at, t.scheduled_at or t.created_at)
        key = (_q(t), _priority(t))
        if (hist := series.get(key)) is None:
            hist = series[key] = metrics.task_queue_wait.labels(*key)
        hist.observe(max(0.0, t.started_at - ready))


def finished(tasks: Iterable[Task]) -> None:
    """Outcomes recorded: counts by outcome, time since the lease, retries."""
    counted: list[tuple[str, ...]] = []
    series: dict[tuple[str, str, str], Histogram] = {}
    for t in tasks:
        outcome = OUTCOME.get(t.state)
        if outcome is None:
            continue
        counted.append((_q(t), _t(t), _priority(t), outcome))
        if t.started_at is not None:
            end = t.finished_at if t.finished_at is not None else t.updated_at
            key = (_q(t), _t(t), outcome)
            if (hist := series.get(key)) is None:
                hist = series[key] = metrics.task_duration.labels(*key)
            hist.observe(max(0.0, end - t.started_at))
        if t.state == TaskState.FAILED:
            retried([t], "failure")
    _count(metrics.tasks_finished, counted)


def expired(tasks: Iterable[Task]) -> None:
    """Leases that ran out: the task goes back (a retry) or to the dead letters."""
    for t in tasks:
        if t.state == TaskState.DEAD_LETTERED:
            metrics.tasks_finished.labels(_q(t), _t(t), _priority(t), "dead_lettered").inc()
        else:
            retried([t], "lease_expired")


def retried(tasks: Iterable[Task], reason: str) -> None:
    for t in tasks:
        metrics.tasks_retried.labels(_q(t), _t(t), _priority(t), reason).inc()
